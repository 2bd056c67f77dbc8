"""The durable side of the safeguards: rate-limit mirror, circuit states, dead-letter archive."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import (
    Base,
    business_fk,
    created_at,
    jsonb,
    optional_business_fk,
    optional_store_fk,
    store_fk,
    updated_at,
    uuidpk,
)
from models.enums import (
    CircuitState,
    FailureCategory,
    Provider,
    ReviewResolution,
    str_enum,
)

#: ``operation_type`` of the row that holds a store's limits for every operation.
ALL_OPERATIONS = "*"


class ProviderRateLimit(Base):
    """Per-store limit overrides, and the mirror of live window usage kept hot in Redis."""

    __tablename__ = "provider_rate_limits"
    __table_args__ = (UniqueConstraint("store_id", "operation_type"),)

    id: Mapped[uuidpk]
    business_id: Mapped[business_fk]
    store_id: Mapped[store_fk]
    provider: Mapped[Provider] = mapped_column(str_enum(Provider, "provider"))
    operation_type: Mapped[str] = mapped_column(String(64), server_default=ALL_OPERATIONS)
    # Limits in cost units per window; NULL means the provider default applies.
    requests_per_minute: Mapped[int | None]
    requests_per_hour: Mapped[int | None]
    requests_per_day: Mapped[int | None]
    concurrency_limit: Mapped[int | None]
    # Usage mirrored from Redis; ``usage_synced_at`` says how fresh it is.
    current_minute_usage: Mapped[int] = mapped_column(server_default="0")
    current_hour_usage: Mapped[int] = mapped_column(server_default="0")
    current_day_usage: Mapped[int] = mapped_column(server_default="0")
    denied_count: Mapped[int] = mapped_column(server_default="0")
    throttled_until: Mapped[datetime | None]
    last_request_at: Mapped[datetime | None]
    usage_synced_at: Mapped[datetime | None]
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]


class CircuitBreakerState(Base):
    """The written-through state and statistics of one circuit (per store and circuit name)."""

    __tablename__ = "circuit_breaker_state"
    __table_args__ = (
        UniqueConstraint(
            "business_id", "store_id", "circuit_name", postgresql_nulls_not_distinct=True
        ),
    )

    id: Mapped[uuidpk]
    business_id: Mapped[business_fk]
    # NULL for circuits that guard a business-wide resource (an outbound endpoint).
    store_id: Mapped[optional_store_fk]
    circuit_name: Mapped[str] = mapped_column(String(100))
    state: Mapped[CircuitState] = mapped_column(
        str_enum(CircuitState, "circuit_state"), server_default=CircuitState.CLOSED.value
    )
    consecutive_failures: Mapped[int] = mapped_column(server_default="0")
    failure_count: Mapped[int] = mapped_column(server_default="0")
    success_count: Mapped[int] = mapped_column(server_default="0")
    total_calls: Mapped[int] = mapped_column(server_default="0")
    total_failures: Mapped[int] = mapped_column(server_default="0")
    trip_count: Mapped[int] = mapped_column(server_default="0")
    half_open_calls: Mapped[int] = mapped_column(server_default="0")
    last_failure_reason: Mapped[str | None] = mapped_column(Text)
    last_failure_at: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]
    opened_at: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None]
    state_changed_at: Mapped[datetime | None]
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]


class FailedJobArchive(Base):
    """The dead-letter archive: a complete, replayable job and why it failed."""

    __tablename__ = "failed_job_archive"
    __table_args__ = (
        Index("ix_failed_job_archive_business_id_reviewed", "business_id", "reviewed"),
        Index(
            "ix_failed_job_archive_failure_category_created_at", "failure_category", "created_at"
        ),
        Index("ix_failed_job_archive_store_id_created_at", "store_id", "created_at"),
        Index("ix_failed_job_archive_reviewed_created_at", "reviewed", "created_at"),
    )

    id: Mapped[uuidpk]
    business_id: Mapped[optional_business_fk]
    store_id: Mapped[optional_store_fk]
    #: The Celery task id; unique so a redelivered failure is archived once.
    job_id: Mapped[str] = mapped_column(String(155), unique=True)
    job_type: Mapped[str] = mapped_column(String(200))
    failure_reason: Mapped[str] = mapped_column(Text)
    failure_category: Mapped[FailureCategory] = mapped_column(
        str_enum(FailureCategory, "failure_category")
    )
    retry_count: Mapped[int] = mapped_column(server_default="0")
    #: Task name, args, kwargs, headers and options: everything replay needs, secrets removed.
    job_data: Mapped[jsonb]
    #: Exception type, message, traceback, worker, timestamps.
    error_context: Mapped[jsonb]
    reviewed: Mapped[bool] = mapped_column(server_default="false")
    reviewed_by: Mapped[str | None] = mapped_column(String(200))
    reviewed_at: Mapped[datetime | None]
    review_note: Mapped[str | None] = mapped_column(Text)
    resolution: Mapped[ReviewResolution | None] = mapped_column(
        str_enum(ReviewResolution, "review_resolution")
    )
    replay_count: Mapped[int] = mapped_column(server_default="0")
    replayed_at: Mapped[datetime | None]
    replay_task_id: Mapped[str | None] = mapped_column(String(155))
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]


__all__ = ["ALL_OPERATIONS", "CircuitBreakerState", "FailedJobArchive", "ProviderRateLimit"]
