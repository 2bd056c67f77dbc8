"""What operators watch: health metrics, alerts, and the cleanup audit trail."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import (
    Base,
    created_at,
    jsonb,
    optional_business_fk,
    optional_store_fk,
    updated_at,
    uuidpk,
)
from models.enums import AlertSeverity, AlertStatus, CleanupOutcome, MetricType, str_enum


class SystemHealthMetric(Base):
    """One measurement; system-wide when ``business_id`` is NULL (tenants never see those).

    Partitioned by RANGE (measured_at), one partition per UTC day (0008): the table's key is
    (id, measured_at); the mapper still identifies a row by ``id``.
    """

    __tablename__ = "system_health_metrics"
    __mapper_args__ = {"primary_key": ["id"]}  # noqa: RUF012 - SQLAlchemy reads it once
    __table_args__ = (
        Index(
            "ix_system_health_metrics_business_id_measured_at",
            "business_id",
            "measured_at",
            "metric_type",
            "metric_name",
        ),
        Index(
            "ix_system_health_metrics_metric_name_measured_at",
            "metric_type",
            "metric_name",
            "measured_at",
        ),
        Index("ix_system_health_metrics_store_id_measured_at", "store_id", "measured_at"),
        # Retention deletes by age over millions of append-only rows: BRIN is tiny and enough.
        Index("ix_system_health_metrics_measured_at_brin", "measured_at", postgresql_using="brin"),
    )

    id: Mapped[uuidpk]
    business_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("businesses.id", ondelete="CASCADE")
    )
    store_id: Mapped[optional_store_fk]
    metric_type: Mapped[MetricType] = mapped_column(str_enum(MetricType, "metric_type"))
    metric_name: Mapped[str] = mapped_column(String(100))
    metric_value: Mapped[float]
    unit: Mapped[str | None] = mapped_column(String(32))
    tags: Mapped[jsonb]
    measured_at: Mapped[datetime] = mapped_column(primary_key=True, server_default=func.now())


class Alert(Base):
    """A raised condition, deduplicated by ``dedup_key`` while open, resolved when it clears."""

    __tablename__ = "alerts"
    __table_args__ = (
        Index(
            "uq_alerts_open_dedup_key",
            "dedup_key",
            unique=True,
            postgresql_where=text("status = 'open'"),
        ),
        Index("ix_alerts_status_raised_at", "status", "raised_at"),
        # Retention deletes resolved alerts by age.
        Index("ix_alerts_resolved_at", "resolved_at", postgresql_where=text("status = 'resolved'")),
    )

    id: Mapped[uuidpk]
    business_id: Mapped[optional_business_fk]
    store_id: Mapped[optional_store_fk]
    rule: Mapped[str] = mapped_column(String(100))
    severity: Mapped[AlertSeverity] = mapped_column(str_enum(AlertSeverity, "alert_severity"))
    status: Mapped[AlertStatus] = mapped_column(
        str_enum(AlertStatus, "alert_status"), server_default=AlertStatus.OPEN.value
    )
    dedup_key: Mapped[str] = mapped_column(String(300))
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[jsonb]
    occurrences: Mapped[int] = mapped_column(server_default="1")
    raised_at: Mapped[created_at]
    last_seen_at: Mapped[created_at]
    resolved_at: Mapped[datetime | None]
    updated_at: Mapped[updated_at]


class CleanupAuditLog(Base):
    """One row per table per retention run: what was deleted, how long it took, how it ended."""

    __tablename__ = "cleanup_audit_log"
    __table_args__ = (Index("ix_cleanup_audit_log_started_at", "started_at"),)

    id: Mapped[uuidpk]
    run_id: Mapped[uuid.UUID] = mapped_column(index=True)
    table_name: Mapped[str] = mapped_column(String(100))
    rows_deleted: Mapped[int] = mapped_column(server_default="0")
    duration_ms: Mapped[int] = mapped_column(server_default="0")
    outcome: Mapped[CleanupOutcome] = mapped_column(str_enum(CleanupOutcome, "cleanup_outcome"))
    error_message: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[created_at]
    finished_at: Mapped[datetime | None]
