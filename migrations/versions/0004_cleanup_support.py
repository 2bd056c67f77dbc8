"""Cleanup support: ANALYZE through a guarded SECURITY DEFINER function, and retention indexes.

The service role does not own the tables, and ANALYZE by a non-owner silently does nothing
(PostgreSQL 17's MAINTAIN privilege is not available before 17). ``syncguard_analyze`` runs as
the tables' owner and accepts only the tables the retention cleanup shrinks.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SERVICE_ROLE = "syncguard_service"
CLEANED_TABLES = (
    "webhook_delivery_log",
    "failed_job_archive",
    "system_health_metrics",
    "webhook_health_log",
    "alerts",
)
_ALLOWED = ", ".join(f"'{t}'::regclass" for t in CLEANED_TABLES)

ANALYZE_FUNCTION = f"""
CREATE FUNCTION syncguard_analyze(target regclass) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    IF target NOT IN ({_ALLOWED}) THEN
        RAISE EXCEPTION 'syncguard_analyze: % is not a table the cleanup maintains', target
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    EXECUTE format('ANALYZE %s', target);
END
$$;
"""


def upgrade() -> None:
    op.execute(ANALYZE_FUNCTION)
    op.execute("REVOKE ALL ON FUNCTION syncguard_analyze(regclass) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION syncguard_analyze(regclass) TO {SERVICE_ROLE}")
    op.create_index(
        "ix_webhook_delivery_log_direction_created_at",
        "webhook_delivery_log",
        ["direction", "created_at"],
    )
    op.create_index(
        "ix_alerts_resolved_at",
        "alerts",
        ["resolved_at"],
        postgresql_where=sa.text("status = 'resolved'"),
    )


def downgrade() -> None:
    op.drop_index("ix_alerts_resolved_at", table_name="alerts")
    op.drop_index("ix_webhook_delivery_log_direction_created_at", table_name="webhook_delivery_log")
    op.execute("DROP FUNCTION IF EXISTS syncguard_analyze(regclass)")
