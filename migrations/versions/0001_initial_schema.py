"""Initial schema: every table, the business_id trigger, the two roles and row-level security.

Revision ID: 0001
Revises:
Create Date: 2026-11-28 11:43:23.594206
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    _create_tables()
    _create_tenancy()


def _create_tables() -> None:
    op.create_table(
        "businesses",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("slug", sa.String(length=100), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_businesses")),
        sa.UniqueConstraint("slug", name=op.f("uq_businesses_slug")),
    )
    op.create_table(
        "cleanup_audit_log",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("table_name", sa.String(length=100), nullable=False),
        sa.Column("rows_deleted", sa.Integer(), server_default="0", nullable=False),
        sa.Column("duration_ms", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "outcome",
            sa.Enum(
                "success",
                "failed",
                "dry_run",
                name="cleanup_outcome",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cleanup_audit_log")),
    )
    op.create_index(
        op.f("ix_cleanup_audit_log_run_id"), "cleanup_audit_log", ["run_id"], unique=False
    )
    op.create_index(
        "ix_cleanup_audit_log_started_at", "cleanup_audit_log", ["started_at"], unique=False
    )
    op.create_table(
        "stores",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("business_id", sa.UUID(), nullable=False),
        sa.Column(
            "provider",
            sa.Enum(
                "gmail",
                "outlook",
                name="provider",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("mailbox_address", sa.String(length=320), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=True),
        sa.Column("credentials_encrypted", sa.LargeBinary(), nullable=True),
        sa.Column("sync_cursor", sa.Text(), nullable=True),
        sa.Column("cursor_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "active",
                "needs_reauth",
                "paused",
                "disabled",
                name="store_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            server_default="active",
            nullable=False,
        ),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("last_synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["business_id"],
            ["businesses.id"],
            name=op.f("fk_stores_business_id_businesses"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stores")),
        sa.UniqueConstraint(
            "provider", "mailbox_address", name=op.f("uq_stores_provider_mailbox_address")
        ),
    )
    op.create_index(op.f("ix_stores_business_id"), "stores", ["business_id"], unique=False)
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("business_id", sa.UUID(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event_types", sa.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("secret_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["business_id"],
            ["businesses.id"],
            name=op.f("fk_webhook_endpoints_business_id_businesses"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
    )
    op.create_index(
        op.f("ix_webhook_endpoints_business_id"), "webhook_endpoints", ["business_id"], unique=False
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("business_id", sa.UUID(), nullable=True),
        sa.Column("store_id", sa.UUID(), nullable=True),
        sa.Column("rule", sa.String(length=100), nullable=False),
        sa.Column(
            "severity",
            sa.Enum(
                "info",
                "warning",
                "critical",
                name="alert_severity",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum(
                "open",
                "resolved",
                name="alert_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            server_default="open",
            nullable=False,
        ),
        sa.Column("dedup_key", sa.String(length=300), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column(
            "details", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column("occurrences", sa.Integer(), server_default="1", nullable=False),
        sa.Column(
            "raised_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column(
            "last_seen_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["business_id"],
            ["businesses.id"],
            name=op.f("fk_alerts_business_id_businesses"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["store_id"], ["stores.id"], name=op.f("fk_alerts_store_id_stores"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    op.create_index(op.f("ix_alerts_business_id"), "alerts", ["business_id"], unique=False)
    op.create_index("ix_alerts_status_raised_at", "alerts", ["status", "raised_at"], unique=False)
    op.create_index(
        "uq_alerts_open_dedup_key",
        "alerts",
        ["dedup_key"],
        unique=True,
        postgresql_where=sa.text("status = 'open'"),
    )
    op.create_table(
        "circuit_breaker_state",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("business_id", sa.UUID(), nullable=False),
        sa.Column("store_id", sa.UUID(), nullable=True),
        sa.Column("circuit_name", sa.String(length=100), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "closed",
                "open",
                "half_open",
                name="circuit_state",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            server_default="closed",
            nullable=False,
        ),
        sa.Column("consecutive_failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("failure_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("success_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("total_calls", sa.Integer(), server_default="0", nullable=False),
        sa.Column("total_failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("trip_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("half_open_calls", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_failure_reason", sa.Text(), nullable=True),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["business_id"],
            ["businesses.id"],
            name=op.f("fk_circuit_breaker_state_business_id_businesses"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["store_id"],
            ["stores.id"],
            name=op.f("fk_circuit_breaker_state_store_id_stores"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_circuit_breaker_state")),
        sa.UniqueConstraint(
            "business_id",
            "store_id",
            "circuit_name",
            name=op.f("uq_circuit_breaker_state_business_id_store_id_circuit_name"),
            postgresql_nulls_not_distinct=True,
        ),
    )
    op.create_index(
        op.f("ix_circuit_breaker_state_business_id"),
        "circuit_breaker_state",
        ["business_id"],
        unique=False,
    )
    op.create_table(
        "failed_job_archive",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("business_id", sa.UUID(), nullable=True),
        sa.Column("store_id", sa.UUID(), nullable=True),
        sa.Column("job_id", sa.String(length=155), nullable=False),
        sa.Column("job_type", sa.String(length=200), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=False),
        sa.Column(
            "failure_category",
            sa.Enum(
                "transient_exhausted",
                "throttled_too_long",
                "circuit_open_too_long",
                "deferred_too_long",
                "authentication",
                "validation",
                "cursor_lost",
                "delivery_exhausted",
                "unknown",
                name="failure_category",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("retry_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "job_data", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column(
            "error_context",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
        sa.Column("reviewed", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("reviewed_by", sa.String(length=200), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("review_note", sa.Text(), nullable=True),
        sa.Column(
            "resolution",
            sa.Enum(
                "replayed",
                "discarded",
                "fixed",
                "wont_fix",
                name="review_resolution",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=True,
        ),
        sa.Column("replay_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("replay_task_id", sa.String(length=155), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["business_id"],
            ["businesses.id"],
            name=op.f("fk_failed_job_archive_business_id_businesses"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["store_id"],
            ["stores.id"],
            name=op.f("fk_failed_job_archive_store_id_stores"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_failed_job_archive")),
        sa.UniqueConstraint("job_id", name=op.f("uq_failed_job_archive_job_id")),
    )
    op.create_index(
        op.f("ix_failed_job_archive_business_id"),
        "failed_job_archive",
        ["business_id"],
        unique=False,
    )
    op.create_index(
        "ix_failed_job_archive_business_id_reviewed",
        "failed_job_archive",
        ["business_id", "reviewed"],
        unique=False,
    )
    op.create_index(
        "ix_failed_job_archive_failure_category_created_at",
        "failed_job_archive",
        ["failure_category", "created_at"],
        unique=False,
    )
    op.create_index(
        "ix_failed_job_archive_reviewed_created_at",
        "failed_job_archive",
        ["reviewed", "created_at"],
        unique=False,
    )
    op.create_index(
        "ix_failed_job_archive_store_id_created_at",
        "failed_job_archive",
        ["store_id", "created_at"],
        unique=False,
    )
    op.create_table(
        "provider_rate_limits",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("business_id", sa.UUID(), nullable=False),
        sa.Column("store_id", sa.UUID(), nullable=False),
        sa.Column(
            "provider",
            sa.Enum(
                "gmail",
                "outlook",
                name="provider",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("operation_type", sa.String(length=64), server_default="*", nullable=False),
        sa.Column("requests_per_minute", sa.Integer(), nullable=True),
        sa.Column("requests_per_hour", sa.Integer(), nullable=True),
        sa.Column("requests_per_day", sa.Integer(), nullable=True),
        sa.Column("concurrency_limit", sa.Integer(), nullable=True),
        sa.Column("current_minute_usage", sa.Integer(), server_default="0", nullable=False),
        sa.Column("current_hour_usage", sa.Integer(), server_default="0", nullable=False),
        sa.Column("current_day_usage", sa.Integer(), server_default="0", nullable=False),
        sa.Column("denied_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("throttled_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_request_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("usage_synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["business_id"],
            ["businesses.id"],
            name=op.f("fk_provider_rate_limits_business_id_businesses"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["store_id"],
            ["stores.id"],
            name=op.f("fk_provider_rate_limits_store_id_stores"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_rate_limits")),
        sa.UniqueConstraint(
            "store_id",
            "operation_type",
            name=op.f("uq_provider_rate_limits_store_id_operation_type"),
        ),
    )
    op.create_index(
        op.f("ix_provider_rate_limits_business_id"),
        "provider_rate_limits",
        ["business_id"],
        unique=False,
    )
    op.create_table(
        "sync_jobs",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("business_id", sa.UUID(), nullable=False),
        sa.Column("store_id", sa.UUID(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "full",
                "incremental",
                name="sync_kind",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "trigger",
            sa.Enum(
                "webhook",
                "manual",
                "schedule",
                "reconciliation",
                "continuation",
                "resync",
                "replay",
                name="sync_trigger",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum(
                "queued",
                "running",
                "deferred",
                "succeeded",
                "failed",
                "archived",
                name="sync_job_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            server_default="queued",
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("deferrals", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "checkpoint",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
        sa.Column("pages_processed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("messages_upserted", sa.Integer(), server_default="0", nullable=False),
        sa.Column("messages_deleted", sa.Integer(), server_default="0", nullable=False),
        sa.Column("celery_task_id", sa.String(length=155), nullable=True),
        sa.Column("continuation_of", sa.UUID(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["business_id"],
            ["businesses.id"],
            name=op.f("fk_sync_jobs_business_id_businesses"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["continuation_of"],
            ["sync_jobs.id"],
            name=op.f("fk_sync_jobs_continuation_of_sync_jobs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["store_id"],
            ["stores.id"],
            name=op.f("fk_sync_jobs_store_id_stores"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_jobs")),
    )
    op.create_index(op.f("ix_sync_jobs_business_id"), "sync_jobs", ["business_id"], unique=False)
    op.create_index(
        op.f("ix_sync_jobs_celery_task_id"), "sync_jobs", ["celery_task_id"], unique=False
    )
    op.create_index(
        "ix_sync_jobs_status_created_at", "sync_jobs", ["status", "created_at"], unique=False
    )
    op.create_index(
        "ix_sync_jobs_store_id_status", "sync_jobs", ["store_id", "status"], unique=False
    )
    op.create_table(
        "synced_messages",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("business_id", sa.UUID(), nullable=False),
        sa.Column("store_id", sa.UUID(), nullable=False),
        sa.Column("provider_message_id", sa.String(length=255), nullable=False),
        sa.Column("thread_id", sa.String(length=255), nullable=True),
        sa.Column("labels", sa.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("sender", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("provider_version", sa.String(length=255), nullable=True),
        sa.Column(
            "extra", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["business_id"],
            ["businesses.id"],
            name=op.f("fk_synced_messages_business_id_businesses"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["store_id"],
            ["stores.id"],
            name=op.f("fk_synced_messages_store_id_stores"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_synced_messages")),
        sa.UniqueConstraint(
            "store_id",
            "provider_message_id",
            name=op.f("uq_synced_messages_store_id_provider_message_id"),
        ),
    )
    op.create_index(
        op.f("ix_synced_messages_business_id"), "synced_messages", ["business_id"], unique=False
    )
    op.create_table(
        "system_health_metrics",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("business_id", sa.UUID(), nullable=True),
        sa.Column("store_id", sa.UUID(), nullable=True),
        sa.Column(
            "metric_type",
            sa.Enum(
                "performance",
                "errors",
                "usage",
                "queue",
                "safeguards",
                "webhooks",
                name="metric_type",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("metric_name", sa.String(length=100), nullable=False),
        sa.Column("metric_value", sa.Double(), nullable=False),
        sa.Column("unit", sa.String(length=32), nullable=True),
        sa.Column(
            "tags", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column(
            "measured_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["business_id"],
            ["businesses.id"],
            name=op.f("fk_system_health_metrics_business_id_businesses"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["store_id"],
            ["stores.id"],
            name=op.f("fk_system_health_metrics_store_id_stores"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_system_health_metrics")),
    )
    op.create_index(
        "ix_system_health_metrics_business_id_measured_at",
        "system_health_metrics",
        ["business_id", "measured_at", "metric_type", "metric_name"],
        unique=False,
    )
    op.create_index(
        "ix_system_health_metrics_measured_at_brin",
        "system_health_metrics",
        ["measured_at"],
        unique=False,
        postgresql_using="brin",
    )
    op.create_index(
        "ix_system_health_metrics_metric_name_measured_at",
        "system_health_metrics",
        ["metric_type", "metric_name", "measured_at"],
        unique=False,
    )
    op.create_index(
        "ix_system_health_metrics_store_id_measured_at",
        "system_health_metrics",
        ["store_id", "measured_at"],
        unique=False,
    )
    op.create_table(
        "webhook_delivery_log",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("business_id", sa.UUID(), nullable=True),
        sa.Column("store_id", sa.UUID(), nullable=True),
        sa.Column("endpoint_id", sa.UUID(), nullable=True),
        sa.Column("webhook_id", sa.String(length=255), nullable=True),
        sa.Column("webhook_type", sa.String(length=100), nullable=False),
        sa.Column(
            "direction",
            sa.Enum(
                "inbound",
                "outbound",
                name="direction",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            server_default="inbound",
            nullable=False,
        ),
        sa.Column("attempt", sa.Integer(), server_default="1", nullable=False),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.Column("response_code", sa.Integer(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["business_id"],
            ["businesses.id"],
            name=op.f("fk_webhook_delivery_log_business_id_businesses"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name=op.f("fk_webhook_delivery_log_endpoint_id_webhook_endpoints"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["store_id"],
            ["stores.id"],
            name=op.f("fk_webhook_delivery_log_store_id_stores"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_delivery_log")),
    )
    op.create_index(
        op.f("ix_webhook_delivery_log_business_id"),
        "webhook_delivery_log",
        ["business_id"],
        unique=False,
    )
    op.create_index(
        "ix_webhook_delivery_log_store_id_created_at",
        "webhook_delivery_log",
        ["store_id", "created_at"],
        unique=False,
    )
    op.create_index(
        "ix_webhook_delivery_log_success_created_at",
        "webhook_delivery_log",
        ["success", "created_at"],
        unique=False,
    )
    op.create_table(
        "webhook_subscriptions",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("business_id", sa.UUID(), nullable=False),
        sa.Column("store_id", sa.UUID(), nullable=False),
        sa.Column(
            "provider",
            sa.Enum(
                "gmail",
                "outlook",
                name="provider",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("provider_subscription_id", sa.String(length=255), nullable=True),
        sa.Column("resource", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("client_state_hash", sa.String(length=64), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "active",
                "expired",
                "failed",
                "removed",
                name="subscription_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            server_default="pending",
            nullable=False,
        ),
        sa.Column("renewal_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("consecutive_renewal_failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_renewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_renewal_error", sa.Text(), nullable=True),
        sa.Column("last_notification_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["business_id"],
            ["businesses.id"],
            name=op.f("fk_webhook_subscriptions_business_id_businesses"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["store_id"],
            ["stores.id"],
            name=op.f("fk_webhook_subscriptions_store_id_stores"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_subscriptions")),
        sa.UniqueConstraint(
            "provider",
            "provider_subscription_id",
            name=op.f("uq_webhook_subscriptions_provider_provider_subscription_id"),
        ),
    )
    op.create_index(
        op.f("ix_webhook_subscriptions_business_id"),
        "webhook_subscriptions",
        ["business_id"],
        unique=False,
    )
    op.create_index(
        "ix_webhook_subscriptions_status_expires_at",
        "webhook_subscriptions",
        ["status", "expires_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_webhook_subscriptions_store_id"),
        "webhook_subscriptions",
        ["store_id"],
        unique=False,
    )
    op.create_table(
        "webhook_health_log",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("business_id", sa.UUID(), nullable=False),
        sa.Column("store_id", sa.UUID(), nullable=False),
        sa.Column("subscription_id", sa.UUID(), nullable=False),
        sa.Column("health_score", sa.Double(), nullable=False),
        sa.Column("success_rate", sa.Double(), nullable=True),
        sa.Column("deliveries_total", sa.Integer(), server_default="0", nullable=False),
        sa.Column("deliveries_failed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("seconds_to_expiry", sa.Integer(), nullable=True),
        sa.Column("renewal_failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("failure_patterns", sa.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column(
            "details", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column(
            "checked_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "health_score >= 0 AND health_score <= 1",
            name=op.f("ck_webhook_health_log_health_score_range"),
        ),
        sa.ForeignKeyConstraint(
            ["business_id"],
            ["businesses.id"],
            name=op.f("fk_webhook_health_log_business_id_businesses"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["store_id"],
            ["stores.id"],
            name=op.f("fk_webhook_health_log_store_id_stores"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["webhook_subscriptions.id"],
            name=op.f("fk_webhook_health_log_subscription_id_webhook_subscriptions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_health_log")),
    )
    op.create_index(
        op.f("ix_webhook_health_log_business_id"),
        "webhook_health_log",
        ["business_id"],
        unique=False,
    )
    op.create_index(
        "ix_webhook_health_log_checked_at", "webhook_health_log", ["checked_at"], unique=False
    )
    op.create_index(
        "ix_webhook_health_log_subscription_id_checked_at",
        "webhook_health_log",
        ["subscription_id", "checked_at"],
        unique=False,
    )


def downgrade() -> None:
    _drop_tenancy()
    _drop_tables()


def _drop_tables() -> None:
    op.drop_index(
        "ix_webhook_health_log_subscription_id_checked_at", table_name="webhook_health_log"
    )
    op.drop_index("ix_webhook_health_log_checked_at", table_name="webhook_health_log")
    op.drop_index(op.f("ix_webhook_health_log_business_id"), table_name="webhook_health_log")
    op.drop_table("webhook_health_log")
    op.drop_index(op.f("ix_webhook_subscriptions_store_id"), table_name="webhook_subscriptions")
    op.drop_index("ix_webhook_subscriptions_status_expires_at", table_name="webhook_subscriptions")
    op.drop_index(op.f("ix_webhook_subscriptions_business_id"), table_name="webhook_subscriptions")
    op.drop_table("webhook_subscriptions")
    op.drop_index("ix_webhook_delivery_log_success_created_at", table_name="webhook_delivery_log")
    op.drop_index("ix_webhook_delivery_log_store_id_created_at", table_name="webhook_delivery_log")
    op.drop_index(op.f("ix_webhook_delivery_log_business_id"), table_name="webhook_delivery_log")
    op.drop_table("webhook_delivery_log")
    op.drop_index(
        "ix_system_health_metrics_store_id_measured_at", table_name="system_health_metrics"
    )
    op.drop_index(
        "ix_system_health_metrics_metric_name_measured_at", table_name="system_health_metrics"
    )
    op.drop_index(
        "ix_system_health_metrics_measured_at_brin",
        table_name="system_health_metrics",
        postgresql_using="brin",
    )
    op.drop_index(
        "ix_system_health_metrics_business_id_measured_at", table_name="system_health_metrics"
    )
    op.drop_table("system_health_metrics")
    op.drop_index(op.f("ix_synced_messages_business_id"), table_name="synced_messages")
    op.drop_table("synced_messages")
    op.drop_index("ix_sync_jobs_store_id_status", table_name="sync_jobs")
    op.drop_index("ix_sync_jobs_status_created_at", table_name="sync_jobs")
    op.drop_index(op.f("ix_sync_jobs_celery_task_id"), table_name="sync_jobs")
    op.drop_index(op.f("ix_sync_jobs_business_id"), table_name="sync_jobs")
    op.drop_table("sync_jobs")
    op.drop_index(op.f("ix_provider_rate_limits_business_id"), table_name="provider_rate_limits")
    op.drop_table("provider_rate_limits")
    op.drop_index("ix_failed_job_archive_store_id_created_at", table_name="failed_job_archive")
    op.drop_index("ix_failed_job_archive_reviewed_created_at", table_name="failed_job_archive")
    op.drop_index(
        "ix_failed_job_archive_failure_category_created_at", table_name="failed_job_archive"
    )
    op.drop_index("ix_failed_job_archive_business_id_reviewed", table_name="failed_job_archive")
    op.drop_index(op.f("ix_failed_job_archive_business_id"), table_name="failed_job_archive")
    op.drop_table("failed_job_archive")
    op.drop_index(op.f("ix_circuit_breaker_state_business_id"), table_name="circuit_breaker_state")
    op.drop_table("circuit_breaker_state")
    op.drop_index(
        "uq_alerts_open_dedup_key", table_name="alerts", postgresql_where=sa.text("status = 'open'")
    )
    op.drop_index("ix_alerts_status_raised_at", table_name="alerts")
    op.drop_index(op.f("ix_alerts_business_id"), table_name="alerts")
    op.drop_table("alerts")
    op.drop_index(op.f("ix_webhook_endpoints_business_id"), table_name="webhook_endpoints")
    op.drop_table("webhook_endpoints")
    op.drop_index(op.f("ix_stores_business_id"), table_name="stores")
    op.drop_table("stores")
    op.drop_index("ix_cleanup_audit_log_started_at", table_name="cleanup_audit_log")
    op.drop_index(op.f("ix_cleanup_audit_log_run_id"), table_name="cleanup_audit_log")
    op.drop_table("cleanup_audit_log")
    op.drop_table("businesses")


# Snapshot of the tenant tables at this revision; later revisions add their own.
SERVICE_ROLE = "syncguard_service"
TENANT_ROLE = "syncguard_tenant"
TENANT_SETTING = "syncguard.business_id"
STORE_SCOPED = (
    "alerts",
    "circuit_breaker_state",
    "failed_job_archive",
    "provider_rate_limits",
    "sync_jobs",
    "synced_messages",
    "system_health_metrics",
    "webhook_delivery_log",
    "webhook_subscriptions",
    "webhook_health_log",
)
TENANT_TABLES = (*STORE_SCOPED, "stores", "webhook_endpoints")
SYSTEM_TABLES = ("cleanup_audit_log",)
# The current tenant, or NULL outside a tenant transaction (so a policy matches nothing).
CURRENT_TENANT = f"NULLIF(current_setting('{TENANT_SETTING}', true), '')::uuid"

FILL_BUSINESS_ID = """
CREATE FUNCTION syncguard_fill_business_id() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    store_business uuid;
BEGIN
    IF NEW.store_id IS NULL THEN
        RETURN NEW;
    END IF;
    SELECT business_id INTO store_business FROM stores WHERE id = NEW.store_id;
    IF store_business IS NULL THEN
        RAISE EXCEPTION 'store % does not exist', NEW.store_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF NEW.business_id IS NULL THEN
        NEW.business_id := store_business;
    ELSIF NEW.business_id <> store_business THEN
        RAISE EXCEPTION 'business_id % does not match store %, which belongs to business %',
            NEW.business_id, NEW.store_id, store_business
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
"""


def _create_role(name: str) -> None:
    # Roles are cluster-wide: another database of the cluster may have created them already.
    op.execute(
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') "
        f"THEN CREATE ROLE {name} NOLOGIN; END IF; END $$"
    )


def _create_tenancy() -> None:
    _create_role(SERVICE_ROLE)
    _create_role(TENANT_ROLE)
    op.execute(f"GRANT USAGE ON SCHEMA public TO {SERVICE_ROLE}, {TENANT_ROLE}")
    op.execute(FILL_BUSINESS_ID)
    for table in STORE_SCOPED:
        op.execute(
            f"CREATE TRIGGER fill_business_id BEFORE INSERT OR UPDATE OF store_id, business_id "
            f"ON {table} FOR EACH ROW EXECUTE FUNCTION syncguard_fill_business_id()"
        )
    for table, tenant_key in (
        ("businesses", "id"),
        *((t, "business_id") for t in TENANT_TABLES),
        *((t, None) for t in SYSTEM_TABLES),
    ):
        _protect(table, tenant_key)


def _protect(table: str, tenant_key: str | None) -> None:
    """Enable and force RLS: the service role sees all, the tenant role reads its own rows."""
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {SERVICE_ROLE}")
    op.execute(
        f"CREATE POLICY service_all ON {table} FOR ALL TO {SERVICE_ROLE} "
        "USING (true) WITH CHECK (true)"
    )
    if tenant_key is not None:
        op.execute(f"GRANT SELECT ON {table} TO {TENANT_ROLE}")
        op.execute(
            f"CREATE POLICY tenant_read ON {table} FOR SELECT TO {TENANT_ROLE} "
            f"USING ({tenant_key} = {CURRENT_TENANT})"
        )


def _drop_tenancy() -> None:
    for table in ("businesses", *TENANT_TABLES, *SYSTEM_TABLES):
        op.execute(f"DROP POLICY IF EXISTS service_all ON {table}")
        op.execute(f"DROP POLICY IF EXISTS tenant_read ON {table}")
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
        op.execute(f"REVOKE ALL ON {table} FROM {SERVICE_ROLE}, {TENANT_ROLE}")
    for table in STORE_SCOPED:
        op.execute(f"DROP TRIGGER IF EXISTS fill_business_id ON {table}")
    op.execute("DROP FUNCTION IF EXISTS syncguard_fill_business_id()")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {SERVICE_ROLE}, {TENANT_ROLE}")
    # The roles stay: they are cluster-wide and other databases may still use them.
