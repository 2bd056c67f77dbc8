"""Tenants and their mailboxes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, business_fk, created_at, updated_at, uuidpk
from models.enums import Provider, StoreStatus, str_enum


class Business(Base):
    """A customer of syncguard; the unit of tenancy."""

    __tablename__ = "businesses"

    id: Mapped[uuidpk]
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]


class Store(Base):
    """One connected mailbox of a business, with its encrypted credentials and sync cursor."""

    __tablename__ = "stores"
    __table_args__ = (UniqueConstraint("provider", "mailbox_address"),)

    id: Mapped[uuidpk]
    business_id: Mapped[business_fk]
    provider: Mapped[Provider] = mapped_column(str_enum(Provider, "provider"))
    mailbox_address: Mapped[str] = mapped_column(String(320))
    display_name: Mapped[str | None] = mapped_column(String(200))
    #: Fernet token of the provider credentials; never decrypted outside the adapter call.
    credentials_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    #: Gmail historyId or Graph deltaLink of the last committed page.
    sync_cursor: Mapped[str | None] = mapped_column(Text)
    cursor_updated_at: Mapped[datetime | None]
    status: Mapped[StoreStatus] = mapped_column(
        str_enum(StoreStatus, "store_status"), server_default=StoreStatus.ACTIVE.value
    )
    status_reason: Mapped[str | None] = mapped_column(Text)
    last_synced_at: Mapped[datetime | None]
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]
