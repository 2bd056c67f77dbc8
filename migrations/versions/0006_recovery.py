"""The recovery sweep: sync_jobs.recoveries and sync_jobs.eta, and the archive category
'recovery_exhausted' for a job the sweep re-published too often.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = (
    "transient_exhausted",
    "throttled_too_long",
    "circuit_open_too_long",
    "deferred_too_long",
    "authentication",
    "validation",
    "cursor_lost",
    "delivery_exhausted",
    "unknown",
)
AFTER = (*BEFORE, "recovery_exhausted")


def _allow(values: tuple[str, ...]) -> None:
    name = op.f("ck_failed_job_archive_failure_category")
    op.drop_constraint(name, "failed_job_archive", type_="check")
    listed = ", ".join(f"'{v}'" for v in values)
    op.create_check_constraint(name, "failed_job_archive", f"failure_category IN ({listed})")


def upgrade() -> None:
    _allow(AFTER)
    op.add_column(
        "sync_jobs", sa.Column("recoveries", sa.Integer(), server_default="0", nullable=False)
    )
    op.add_column("sync_jobs", sa.Column("eta", sa.DateTime(timezone=True), nullable=True))
    # The sweep's question, every period: which unfinished jobs have been quiet for how long.
    op.create_index(
        "ix_sync_jobs_status_updated_at", "sync_jobs", ["status", "updated_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_sync_jobs_status_updated_at", table_name="sync_jobs")
    op.drop_column("sync_jobs", "eta")
    op.drop_column("sync_jobs", "recoveries")
    op.execute(
        "UPDATE failed_job_archive SET failure_category = 'unknown' "
        "WHERE failure_category = 'recovery_exhausted'"
    )
    _allow(BEFORE)
