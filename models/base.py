"""Declarative base: naming convention, type map and the column aliases every table repeats."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from sqlalchemy import DateTime, ForeignKey, MetaData, func
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, mapped_column

#: Alembic names every constraint from this, so migrations never meet an anonymous one.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Every syncguard table derives from this."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads it once, at class creation
        datetime: DateTime(timezone=True),
        uuid.UUID: UUID(as_uuid=True),
        dict[str, Any]: JSONB,
    }


uuidpk = Annotated[
    uuid.UUID,
    mapped_column(primary_key=True, default=uuid.uuid4, server_default=func.gen_random_uuid()),
]
created_at = Annotated[datetime, mapped_column(server_default=func.now())]
updated_at = Annotated[datetime, mapped_column(server_default=func.now(), onupdate=func.now())]
jsonb = Annotated[dict[str, Any], mapped_column(server_default="{}")]

# Tenant keys. ``business_id`` is filled from ``store_id`` by a trigger when omitted.
business_fk = Annotated[
    uuid.UUID, mapped_column(ForeignKey("businesses.id", ondelete="CASCADE"), index=True)
]
optional_business_fk = Annotated[
    uuid.UUID | None,
    mapped_column(ForeignKey("businesses.id", ondelete="CASCADE"), index=True),
]
store_fk = Annotated[uuid.UUID, mapped_column(ForeignKey("stores.id", ondelete="CASCADE"))]
optional_store_fk = Annotated[
    uuid.UUID | None, mapped_column(ForeignKey("stores.id", ondelete="CASCADE"))
]
