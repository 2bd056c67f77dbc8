"""API keys of the dashboard and JSON API: a tenant's read-only keys and operators' keys."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import CheckConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, created_at, optional_business_fk, uuidpk
from models.enums import str_enum


class ApiKeyRole(enum.StrEnum):
    """What a key may do: a tenant reads its own business; an operator reads and acts on all."""

    TENANT = "tenant"
    OPERATOR = "operator"


class ApiKey(Base):
    """One API key, stored as its SHA-256 only; the plaintext is shown once, at creation."""

    __tablename__ = "api_keys"
    __table_args__ = (
        # An operator key belongs to no business; a tenant key always to exactly one.
        CheckConstraint(
            "(role = 'operator') = (business_id IS NULL)", name="operator_has_no_business"
        ),
    )

    id: Mapped[uuidpk]
    #: NULL for an operator key.
    business_id: Mapped[optional_business_fk]
    #: Who holds the key; recorded as the reviewer of what the key does.
    name: Mapped[str] = mapped_column(String(200))
    #: The key's first characters: shown in listings and used to find the row.
    key_prefix: Mapped[str] = mapped_column(String(16), index=True)
    #: Hex SHA-256 of the whole key.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[ApiKeyRole] = mapped_column(str_enum(ApiKeyRole, "api_key_role"))
    created_at: Mapped[created_at]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


__all__ = ["ApiKey", "ApiKeyRole"]
