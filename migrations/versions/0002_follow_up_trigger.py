"""sync_jobs.trigger accepts 'follow_up', the coalesced run after a burst of requests.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = ("webhook", "manual", "schedule", "reconciliation", "continuation", "resync", "replay")
AFTER = (*BEFORE, "follow_up")


def _allow(values: tuple[str, ...]) -> None:
    op.drop_constraint(op.f("ck_sync_jobs_sync_trigger"), "sync_jobs", type_="check")
    listed = ", ".join(f"'{v}'" for v in values)
    op.create_check_constraint(
        op.f("ck_sync_jobs_sync_trigger"), "sync_jobs", f"trigger IN ({listed})"
    )


def upgrade() -> None:
    _allow(AFTER)


def downgrade() -> None:
    op.execute("UPDATE sync_jobs SET trigger = 'manual' WHERE trigger = 'follow_up'")
    _allow(BEFORE)
