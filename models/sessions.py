"""Dashboard login sessions: a random token per login, stored as its SHA-256, bound to its key."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, created_at, optional_business_fk, uuidpk


class DashboardSession(Base):
    """One dashboard login: the cookie holds the token, this row only its hash.

    A session ends at ``expires_at``, at logout (the row is deleted) or when its API key is
    revoked (the key's row is checked on every request, and the revocation deletes the rows).
    """

    __tablename__ = "dashboard_sessions"

    id: Mapped[uuidpk]
    #: The key's business (NULL for an operator key): row-level security scopes by it.
    business_id: Mapped[optional_business_fk]
    api_key_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), index=True
    )
    #: Hex SHA-256 of the session token; the token itself is only in the browser's cookie.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[created_at]
    expires_at: Mapped[datetime] = mapped_column(index=True)


__all__ = ["DashboardSession"]
