"""Sync jobs and the local copy of each mailbox."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ARRAY, BigInteger, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, business_fk, created_at, jsonb, store_fk, updated_at, uuidpk
from models.enums import SyncJobStatus, SyncKind, SyncTrigger, str_enum


class SyncJob(Base):
    """One requested sync of a store: its trigger, progress, checkpoint and outcome."""

    __tablename__ = "sync_jobs"
    __table_args__ = (
        Index("ix_sync_jobs_store_id_status", "store_id", "status"),
        Index("ix_sync_jobs_status_created_at", "status", "created_at"),
        Index("ix_sync_jobs_status_updated_at", "status", "updated_at"),
    )

    id: Mapped[uuidpk]
    business_id: Mapped[business_fk]
    store_id: Mapped[store_fk]
    kind: Mapped[SyncKind] = mapped_column(str_enum(SyncKind, "sync_kind"))
    trigger: Mapped[SyncTrigger] = mapped_column(str_enum(SyncTrigger, "sync_trigger"))
    status: Mapped[SyncJobStatus] = mapped_column(
        str_enum(SyncJobStatus, "sync_job_status"), server_default=SyncJobStatus.QUEUED.value
    )
    attempts: Mapped[int] = mapped_column(server_default="0")
    deferrals: Mapped[int] = mapped_column(server_default="0")
    #: Times the recovery sweep re-published the job (tasks/recovery.py).
    recoveries: Mapped[int] = mapped_column(server_default="0")
    #: When the job's latest message may start (publication time plus its countdown): a
    #: queued or deferred job not started by this plus the queue bound had its message lost.
    eta: Mapped[datetime | None]
    #: Where a killed worker resumes: page token, cursor in progress, phase.
    checkpoint: Mapped[jsonb]
    pages_processed: Mapped[int] = mapped_column(server_default="0")
    messages_upserted: Mapped[int] = mapped_column(server_default="0")
    messages_deleted: Mapped[int] = mapped_column(server_default="0")
    celery_task_id: Mapped[str | None] = mapped_column(String(155), index=True)
    continuation_of: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("sync_jobs.id", ondelete="SET NULL")
    )
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[created_at]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[updated_at]


class SyncedMessage(Base):
    """The local copy of one provider message, upserted by its provider id."""

    __tablename__ = "synced_messages"
    __table_args__ = (UniqueConstraint("store_id", "provider_message_id"),)

    id: Mapped[uuidpk]
    business_id: Mapped[business_fk]
    store_id: Mapped[store_fk]
    provider_message_id: Mapped[str] = mapped_column(String(255))
    thread_id: Mapped[str | None] = mapped_column(String(255))
    labels: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    subject: Mapped[str | None] = mapped_column(Text)
    sender: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime | None]
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    #: Provider change marker (Gmail historyId, Graph changeKey) of the last applied version.
    provider_version: Mapped[str | None] = mapped_column(String(255))
    extra: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]
