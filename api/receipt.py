"""A receiver's writes for one delivery in one statement: job rows, subscription touch, log rows.

Each PostgreSQL round trip of the receiver's transaction used to be a separate statement (job
row per store, subscription touch, delivery row per group), each through the ORM. Here they are
data-modifying CTEs of one ``SELECT`` (PostgreSQL runs each such CTE exactly once, referenced
or not: "WITH Queries", Data-Modifying Statements in WITH), so the transaction costs BEGIN, the
lookup, this statement and COMMIT. The caller's transaction stays the unit: nothing is
published before it commits (the ledger rule of ``tasks.sync.requests``).

A job row is written only for a store that is active at that moment (the statement of
``tasks.sync.jobs``); should one not be written, ``StoreChanged`` is raised and the caller rolls
the whole transaction back and takes its general path, which says why per store.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, String, Update, insert, literal, select, union_all

from models import SyncTrigger, WebhookDeliveryLog
from safeguards.delivery_log import delivery_values
from tasks.sync.jobs import insert_job
from tasks.sync.requests import PlannedSync


@dataclass(frozen=True)
class DeliveryRow:
    """One inbound delivery-log row: about which store and subscription, the answer, the text."""

    store_id: uuid.UUID | None
    webhook_id: str | None
    webhook_type: str
    status: int
    message: str | None
    success: bool


class StoreChanged(Exception):
    """A job row was not written: its store was paused or deleted since the lookup."""


def write_receipt(
    connection: Connection,
    jobs: Sequence[tuple[PlannedSync, SyncTrigger]],
    touch: Update | None,
    rows: Sequence[DeliveryRow],
    duration_ms: int,
) -> list[uuid.UUID]:
    """Write ``jobs``' rows, the subscriptions' ``touch`` (see api.lookups) and ``rows``; one
    statement.

    Returns the delivery rows' ids. Raises StoreChanged (the caller must roll back) when a job
    row was not written; SQLAlchemy's errors when the database is unreachable.
    """
    if not rows:  # nothing verified: no job to write and no subscription to touch either
        return []
    ctes: list[Any] = []
    written: list[Any] = []
    for i, (plan, trigger) in enumerate(jobs):
        job = insert_job(plan.store_id, trigger, plan.job_id, plan.task_id)
        ctes.append(job.cte(f"job_{i}"))
        written.append(select(literal("job", String), ctes[-1].c.id))
    if touch is not None:
        ctes.append(touch.cte("touch"))
    for i, row in enumerate(rows):
        # One single-row INSERT each: a multi-row VALUES has no cache key, so SQLAlchemy would
        # compile the whole statement again for every delivery (half the receiver's CPU).
        log = insert(WebhookDeliveryLog).values(**_values(row, duration_ms))
        ctes.append(log.returning(WebhookDeliveryLog.id).cte(f"log_{i}"))
        written.append(select(literal("log", String), ctes[-1].c.id))
    statement = union_all(*written).add_cte(*ctes)
    found = connection.execute(statement).all()
    if sum(1 for kind, _ in found if kind == "job") != len(jobs):
        raise StoreChanged
    return [row_id for kind, row_id in found if kind == "log"]


def _values(row: DeliveryRow, duration_ms: int) -> dict[str, Any]:
    values = delivery_values(
        row.store_id,
        row.webhook_id,
        row.webhook_type,
        row.success,
        row.status,
        row.message,
        duration_ms,
    )
    # Anonymous binds, and the id given rather than left to the column's Python default: two
    # INSERTs into one table in one statement would otherwise share bind names.
    values["id"] = uuid.uuid4()
    columns = WebhookDeliveryLog.__table__.c
    return {name: literal(value, columns[name].type) for name, value in values.items()}
