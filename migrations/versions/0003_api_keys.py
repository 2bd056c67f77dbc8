"""api_keys: keys of the dashboard and JSON API, hashed, with row-level security like the rest.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SERVICE_ROLE = "syncguard_service"
TENANT_ROLE = "syncguard_tenant"
CURRENT_TENANT = "NULLIF(current_setting('syncguard.business_id', true), '')::uuid"


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("business_id", sa.UUID(), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("key_prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "role",
            sa.Enum(
                "tenant",
                "operator",
                name="api_key_role",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "(role = 'operator') = (business_id IS NULL)",
            name=op.f("ck_api_keys_operator_has_no_business"),
        ),
        sa.ForeignKeyConstraint(
            ["business_id"],
            ["businesses.id"],
            name=op.f("fk_api_keys_business_id_businesses"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index(op.f("ix_api_keys_business_id"), "api_keys", ["business_id"], unique=False)
    op.create_index(op.f("ix_api_keys_key_prefix"), "api_keys", ["key_prefix"], unique=False)
    # As 0001's _protect: forced RLS, the service role sees all, a tenant reads its own keys.
    op.execute("ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE api_keys FORCE ROW LEVEL SECURITY")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON api_keys TO {SERVICE_ROLE}")
    op.execute(
        f"CREATE POLICY service_all ON api_keys FOR ALL TO {SERVICE_ROLE} "
        "USING (true) WITH CHECK (true)"
    )
    op.execute(f"GRANT SELECT ON api_keys TO {TENANT_ROLE}")
    op.execute(
        f"CREATE POLICY tenant_read ON api_keys FOR SELECT TO {TENANT_ROLE} "
        f"USING (business_id = {CURRENT_TENANT})"
    )


def downgrade() -> None:
    op.execute("DROP POLICY IF EXISTS tenant_read ON api_keys")
    op.execute("DROP POLICY IF EXISTS service_all ON api_keys")
    op.execute(f"REVOKE ALL ON api_keys FROM {SERVICE_ROLE}, {TENANT_ROLE}")
    op.drop_index(op.f("ix_api_keys_key_prefix"), table_name="api_keys")
    op.drop_index(op.f("ix_api_keys_business_id"), table_name="api_keys")
    op.drop_table("api_keys")
