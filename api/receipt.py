"""A receiver's writes for one delivery in one statement: job rows, subscription touch, log rows.

Each PostgreSQL round trip of the receiver's transaction used to be a separate statement (job
row per store, subscription touch, delivery row per group), each through the ORM. Here they are
data-modifying CTEs of one ``SELECT`` (PostgreSQL runs each such CTE exactly once, referenced
or not: "WITH Queries", Data-Modifying Statements in WITH), so the transaction costs BEGIN, the
lookup, this statement and COMMIT. The caller's transaction stays the unit: nothing is
published before it commits (the ledger rule of ``tasks.sync.requests``).

A job row is written only for a store that is active at that moment (the statement of
``tasks.sync.jobs``); should one not be written, ``StoreChanged`` is raised and the caller
rolls the transaction back and takes its general path, which says why per store. The touch and
the log rows are written only once every job row was (conditioned on their RETURNING), so a
receipt of at most one job row is all or nothing on its own: on an autocommit connection
(api.outlook) it needs no rollback. (Of several job rows, those of the stores still active
would stay: such a receipt needs its transaction.)
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    CompoundSelect,
    Connection,
    Dialect,
    String,
    Update,
    and_,
    bindparam,
    exists,
    insert,
    literal,
    select,
    true,
    union_all,
)

from api.lookups import Touch
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
    touch: Touch | None,
    rows: Sequence[DeliveryRow],
    duration_ms: int,
) -> list[uuid.UUID]:
    """Write ``jobs``' rows, the subscriptions' ``touch`` (see api.lookups) and ``rows``; one
    statement.

    Returns the delivery rows' ids. Raises StoreChanged when a job row was not written (then
    no touch and no delivery row was either; the caller rolls back any other job row);
    SQLAlchemy's errors when the database is unreachable.
    """
    if not rows:  # nothing verified: no job to write and no subscription to touch either
        return []
    triggers = tuple(trigger for _, trigger in jobs)
    touch_statement = None if touch is None else touch.statement
    template = _template(connection.dialect, triggers, touch_statement, len(rows))
    params: dict[str, Any] = {} if touch is None else dict(touch.params)
    for names, (plan, _) in zip(template.job_binds, jobs, strict=True):
        params.update(zip(names, (plan.store_id, plan.job_id, plan.task_id), strict=True))
    log_ids = [uuid.uuid4() for _ in rows]
    for i, (row, log_id) in enumerate(zip(rows, log_ids, strict=True)):
        values = _values(row, duration_ms)
        values["id"] = log_id
        params.update((f"log_{i}_{name}", value) for name, value in values.items())
    found = connection.execute(template.statement, params).all()
    if sum(1 for kind, _ in found if kind == "job") != len(jobs):
        raise StoreChanged
    return log_ids


@dataclass(frozen=True)
class _Template:
    """The statement for one shape of receipt, and the bind names of each job's values."""

    statement: CompoundSelect[Any]
    #: Per job: the compiled names of its (store id, job id, task id) binds.
    job_binds: tuple[tuple[str, str, str], ...]


@functools.lru_cache(maxsize=64)
def _template(
    dialect: Dialect, triggers: tuple[SyncTrigger, ...], touch: Update | None, n_rows: int
) -> _Template:
    """Built once per shape and reused: building the statement and its cache key anew for
    every delivery cost the receiver a fifth of its CPU (py-spy). Each execution passes its
    values by bind name; the job statement's binds are anonymous (``tasks.sync.jobs``), so
    their names are found by compiling it once with placeholder values that occur nowhere
    else."""
    ctes: list[Any] = []
    written: list[Any] = []
    placeholders: list[tuple[uuid.UUID, uuid.UUID, str]] = []
    for i, trigger in enumerate(triggers):
        store, job, task = uuid.uuid4(), uuid.uuid4(), f"placeholder-{uuid.uuid4()}"
        placeholders.append((store, job, task))
        ctes.append(insert_job(store, trigger, job, task).cte(f"job_{i}"))
        written.append(select(literal("job", String), ctes[-1].c.id))
    # The other CTEs write only once every job row was (each RETURNs its id, or nothing): the
    # snapshot is shared, so a CTE sees another's outcome only through its RETURNING.
    every_job = and_(true(), *(exists(cte.select()) for cte in ctes))
    if touch is not None:
        ctes.append(touch.where(every_job).cte("touch"))
    columns = WebhookDeliveryLog.__table__.c
    for i in range(n_rows):
        values = [bindparam(f"log_{i}_{name}", type_=columns[name].type) for name in _LOG]
        log = insert(WebhookDeliveryLog).from_select(_LOG, select(*values).where(every_job))
        ctes.append(log.returning(WebhookDeliveryLog.id).cte(f"log_{i}"))
        written.append(select(literal("log", String), ctes[-1].c.id))
    statement = union_all(*written).add_cte(*ctes)
    compiled = statement.compile(dialect=dialect).params
    names = {value: name for name, value in compiled.items() if isinstance(value, uuid.UUID | str)}
    job_binds = tuple((names[s], names[j], names[t]) for s, j, t in placeholders)
    return _Template(statement, job_binds)


def _values(row: DeliveryRow, duration_ms: int) -> dict[str, Any]:
    return delivery_values(
        row.store_id,
        row.webhook_id,
        row.webhook_type,
        row.success,
        row.status,
        row.message,
        duration_ms,
    )


#: The delivery-log columns a receipt writes: those delivery_values fills, and the id (given,
#: not left to the column's Python default, so two rows in one statement never share a bind).
_LOG = (*_values(DeliveryRow(None, None, "", 0, None, False), 0), "id")
