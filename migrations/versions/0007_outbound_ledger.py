"""The outbound ledger: outbound_messages, one row per message written before its publication,
with row-level security, a trigger that fills business_id from the endpoint, and the cleanup's
ANALYZE allowed on it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "outbound_messages"
SERVICE_ROLE = "syncguard_service"
TENANT_ROLE = "syncguard_tenant"
CURRENT_TENANT = "NULLIF(current_setting('syncguard.business_id', true), '')::uuid"
NOW = sa.text("now()")
STATUSES = ("queued", "delivering", "delivered", "archived", "dropped")
CLEANED_BEFORE = (
    "webhook_delivery_log",
    "failed_job_archive",
    "system_health_metrics",
    "webhook_health_log",
    "alerts",
)

# As syncguard_fill_business_id (0001) does from a store, here from the endpoint: a row can
# never name another business than its endpoint's.
FILL_FROM_ENDPOINT = """
CREATE FUNCTION syncguard_fill_business_id_from_endpoint() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    endpoint_business uuid;
BEGIN
    SELECT business_id INTO endpoint_business FROM webhook_endpoints WHERE id = NEW.endpoint_id;
    IF endpoint_business IS NULL THEN
        RAISE EXCEPTION 'webhook endpoint % does not exist', NEW.endpoint_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF NEW.business_id IS NULL THEN
        NEW.business_id := endpoint_business;
    ELSIF NEW.business_id <> endpoint_business THEN
        RAISE EXCEPTION 'business_id % does not match endpoint %, which belongs to business %',
            NEW.business_id, NEW.endpoint_id, endpoint_business
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
"""


def _analyze_function(tables: tuple[str, ...]) -> str:
    allowed = ", ".join(f"'{t}'::regclass" for t in tables)
    return f"""
CREATE OR REPLACE FUNCTION syncguard_analyze(target regclass) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    IF target NOT IN ({allowed}) THEN
        RAISE EXCEPTION 'syncguard_analyze: % is not a table the cleanup maintains', target
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    EXECUTE format('ANALYZE %s', target);
END
$$;
"""


def upgrade() -> None:
    listed = ", ".join(f"'{s}'" for s in STATUSES)
    op.create_table(
        TABLE,
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("business_id", sa.UUID(), nullable=False),
        sa.Column("endpoint_id", sa.UUID(), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column(
            "payload",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
        sa.Column("status", sa.String(length=20), server_default="queued", nullable=False),
        sa.Column("attempt", sa.Integer(), server_default="1", nullable=False),
        sa.Column("recoveries", sa.Integer(), server_default="0", nullable=False),
        sa.Column("eta", sa.DateTime(timezone=True), nullable=True),
        sa.Column("celery_task_id", sa.String(length=64), nullable=True),
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
        sa.CheckConstraint(f"status IN ({listed})", name=op.f("ck_outbound_messages_status")),
        sa.ForeignKeyConstraint(
            ["business_id"],
            ["businesses.id"],
            name=op.f("fk_outbound_messages_business_id_businesses"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name=op.f("fk_outbound_messages_endpoint_id_webhook_endpoints"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbound_messages")),
    )
    for column in ("business_id", "endpoint_id"):
        op.create_index(op.f(f"ix_{TABLE}_{column}"), TABLE, [column], unique=False)
    # The sweep's question, every period: which unfinished messages are overdue.
    op.create_index("ix_outbound_messages_status_eta", TABLE, ["status", "eta"], unique=False)
    op.execute(FILL_FROM_ENDPOINT)
    op.execute(
        f"CREATE TRIGGER fill_business_id BEFORE INSERT OR UPDATE OF endpoint_id, business_id "
        f"ON {TABLE} FOR EACH ROW EXECUTE FUNCTION syncguard_fill_business_id_from_endpoint()"
    )
    # As 0001's _protect: forced RLS, the service role sees all, a tenant reads its own.
    op.execute(f"ALTER TABLE {TABLE} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {TABLE} FORCE ROW LEVEL SECURITY")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {TABLE} TO {SERVICE_ROLE}")
    op.execute(
        f"CREATE POLICY service_all ON {TABLE} FOR ALL TO {SERVICE_ROLE} "
        "USING (true) WITH CHECK (true)"
    )
    op.execute(f"GRANT SELECT ON {TABLE} TO {TENANT_ROLE}")
    op.execute(
        f"CREATE POLICY tenant_read ON {TABLE} FOR SELECT TO {TENANT_ROLE} "
        f"USING (business_id = {CURRENT_TENANT})"
    )
    op.execute(_analyze_function((*CLEANED_BEFORE, TABLE)))


def downgrade() -> None:
    op.execute(_analyze_function(CLEANED_BEFORE))
    op.execute(f"DROP POLICY IF EXISTS tenant_read ON {TABLE}")
    op.execute(f"DROP POLICY IF EXISTS service_all ON {TABLE}")
    op.execute(f"REVOKE ALL ON {TABLE} FROM {SERVICE_ROLE}, {TENANT_ROLE}")
    op.execute(f"DROP TRIGGER IF EXISTS fill_business_id ON {TABLE}")
    op.execute("DROP FUNCTION IF EXISTS syncguard_fill_business_id_from_endpoint()")
    op.drop_index("ix_outbound_messages_status_eta", table_name=TABLE)
    for column in ("endpoint_id", "business_id"):
        op.drop_index(op.f(f"ix_{TABLE}_{column}"), table_name=TABLE)
    op.drop_table(TABLE)
