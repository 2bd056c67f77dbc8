"""The outbound ledger: one row per outbound message, written before its first publication."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, business_fk, created_at, jsonb, updated_at


class OutboundStatus(enum.StrEnum):
    """Where an outbound message is: waiting, being posted, or one of three terminal states."""

    QUEUED = "queued"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    ARCHIVED = "archived"
    #: The endpoint was deleted or disabled before the message reached it.
    DROPPED = "dropped"


#: Statuses nothing moves a message out of (except a replay from the archive).
TERMINAL = (OutboundStatus.DELIVERED, OutboundStatus.ARCHIVED, OutboundStatus.DROPPED)
_LISTED = ", ".join(f"'{s.value}'" for s in OutboundStatus)


class OutboundMessage(Base):
    """One event to one endpoint (Standard Webhooks message id), from decision to terminal state.

    ``celery_task_id`` names the one message allowed to run it (the fence); ``eta`` is when that
    message is expected to start; the recovery sweep re-publishes a non-terminal row quiet for
    longer than ``outbound_queue_bound_s`` past it (tasks/outbound/ledger.py).
    """

    __tablename__ = "outbound_messages"
    __table_args__ = (
        CheckConstraint(f"status IN ({_LISTED})", name="status"),
        Index("ix_outbound_messages_status_eta", "status", "eta"),
    )

    #: The Standard Webhooks ``webhook-id`` (``msg_`` + 32 hex digits).
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    business_id: Mapped[business_fk]
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True
    )
    event_type: Mapped[str] = mapped_column(String(100))
    #: The body posted, already redacted (secret-shaped values masked) when the event was built.
    payload: Mapped[jsonb]
    status: Mapped[str] = mapped_column(String(20), server_default=OutboundStatus.QUEUED.value)
    #: The attempt the next run makes (1 before the first POST).
    attempt: Mapped[int] = mapped_column(server_default="1")
    recoveries: Mapped[int] = mapped_column(server_default="0")
    eta: Mapped[datetime | None]
    celery_task_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]
