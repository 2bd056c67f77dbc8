"""dashboard_sessions: revocable dashboard logins, stored hashed, with row-level security.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "dashboard_sessions"
SERVICE_ROLE = "syncguard_service"
TENANT_ROLE = "syncguard_tenant"
CURRENT_TENANT = "NULLIF(current_setting('syncguard.business_id', true), '')::uuid"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("business_id", sa.UUID(), nullable=True),
        sa.Column("api_key_id", sa.UUID(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_dashboard_sessions_api_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["business_id"],
            ["businesses.id"],
            name=op.f("fk_dashboard_sessions_business_id_businesses"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dashboard_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_dashboard_sessions_token_hash")),
    )
    for column in ("api_key_id", "business_id", "expires_at"):
        op.create_index(op.f(f"ix_{TABLE}_{column}"), TABLE, [column], unique=False)
    # As 0003 did for api_keys: forced RLS, the service role sees all, a tenant reads its own.
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


def downgrade() -> None:
    op.execute(f"DROP POLICY IF EXISTS tenant_read ON {TABLE}")
    op.execute(f"DROP POLICY IF EXISTS service_all ON {TABLE}")
    op.execute(f"REVOKE ALL ON {TABLE} FROM {SERVICE_ROLE}, {TENANT_ROLE}")
    for column in ("expires_at", "business_id", "api_key_id"):
        op.drop_index(op.f(f"ix_{TABLE}_{column}"), table_name=TABLE)
    op.drop_table(TABLE)
