"""Reconciliation: Beat requests a sync of every active, connected store that has not synced lately.

Notifications are only a hint: a dropped or never-sent one is covered by the next reconciliation,
so a missed notification never means a missed message.

Set-based: Beat runs this every ``reconciliation_interval_s / RECONCILE_SLICES`` and each run
requests a sync only of the stores whose last successful sync is older than
``reconciliation_interval_s`` minus that period, so every store is still read at least once per
``reconciliation_interval_s`` (a store synced at t is picked by the first run at or after
t + interval - period, at most one period later) while a store its notifications keep fresh costs
nothing, and the work is spread over the interval instead of arriving all at once.

Beat's run lists the stale stores by id (keyset, one SELECT per ``CHUNK``) and fans each
range out as a ``reconcile_chunk`` message. Per chunk: one SELECT; one pipelined round trip of
single-flight requests (coalescing, as ``request_sync``); for markers left by jobs the ledger says
have ended, one SELECT and one pipelined take-over; one multi-row ``INSERT ... SELECT`` of the
job rows, committed; then the messages, published over one broker connection. The ledger rule
holds per job: its row is committed before its message exists.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text

from beat_schedule import RECONCILE_SLICES
from models import SyncJobStatus, SyncKind, SyncTrigger
from syncguard.db import service_session
from syncguard.settings import get_settings
from tasks import app
from tasks.queues import MAINTENANCE
from tasks.sync.jobs import ENDED
from tasks.sync.requests import SYNC_TASK, sync_flight

log = logging.getLogger(__name__)

#: Stores per SELECT, pipelined round trip and INSERT.
CHUNK = 250
#: Broker operations one pipelined publish carries (a chunk's messages: one round trip).
PUBLISH_BATCH = 1_000

_STALE = text(
    """
SELECT id FROM stores
WHERE status = 'active' AND credentials_encrypted IS NOT NULL AND id > :after AND id <= :last
  AND (last_synced_at IS NULL OR last_synced_at < now() - make_interval(secs => :age_s))
ORDER BY id
LIMIT :limit
"""
)

_ENDED = text("SELECT id FROM sync_jobs WHERE id = ANY(:ids) AND status = ANY(:ended)")

#: The multi-row form of ``tasks.sync.jobs.create_job``: a row only for a store still active.
_INSERT = text(
    """
INSERT INTO sync_jobs (id, business_id, store_id, kind, trigger, checkpoint, celery_task_id, eta)
SELECT r.job_id, s.business_id, s.id,
       CASE WHEN coalesce(s.sync_cursor, '') = '' THEN :full ELSE :incremental END,
       :trigger, '{}'::jsonb, r.task_id, now()
FROM unnest(CAST(:stores AS uuid[]), CAST(:jobs AS uuid[]), CAST(:tasks AS text[]))
     AS r(store_id, job_id, task_id)
JOIN stores s ON s.id = r.store_id AND s.status = 'active'
RETURNING store_id
"""
)


def reconcile_period_s() -> float:
    """Beat's period of ``reconcile_stores``, seconds (``beat_schedule.RECONCILE_STORES_EVERY_S``
    with the current settings)."""
    return get_settings().reconciliation_interval_s / RECONCILE_SLICES


@app.task(name="tasks.webhooks.reconcile_stores")  # type: ignore[untyped-decorator]
def reconcile_stores() -> dict[str, Any]:
    """Fan the stale active, connected stores out to workers in id ranges of ``CHUNK`` stores.

    One keyset SELECT of ids per chunk; each range becomes one ``reconcile_chunk`` message on the
    maintenance queue, so Beat's own run stays short and several workers share the requests.
    Returns ``{"stores": stale stores found, "chunks": [the chunk tasks' ids]}``.
    """
    chunks: list[str] = []
    stores, after = 0, uuid.UUID(int=0)
    while True:
        store_ids = _stale_after(after, uuid.UUID(int=(1 << 128) - 1))
        if store_ids:
            stores += len(store_ids)
            sent = reconcile_chunk.apply_async(
                args=[str(after), str(store_ids[-1])], queue=MAINTENANCE
            )
            chunks.append(sent.id)
        if len(store_ids) < CHUNK:
            return {"stores": stores, "chunks": chunks}
        after = store_ids[-1]


@app.task(name="tasks.sync.reconcile_chunk")  # type: ignore[untyped-decorator]
def reconcile_chunk(after: str, last: str) -> int:
    """Request a reconciliation sync of each stale store with ``after < id <= last`` (at most
    ``CHUNK``); returns jobs enqueued. Idempotent: a store synced or requested meanwhile is
    skipped or folded."""
    store_ids = _stale_after(uuid.UUID(after), uuid.UUID(last))
    return request_reconciliations(store_ids) if store_ids else 0


def _stale_after(after: uuid.UUID, last: uuid.UUID) -> list[uuid.UUID]:
    """Up to ``CHUNK`` stale stores with ``after < id <= last``, in id order (one SELECT)."""
    age_s = get_settings().reconciliation_interval_s - reconcile_period_s()
    with service_session() as session:
        params = {"after": after, "last": last, "age_s": age_s, "limit": CHUNK}
        return list(session.scalars(_STALE, params))


def request_reconciliations(store_ids: Sequence[uuid.UUID]) -> int:
    """``request_sync(store, RECONCILIATION)`` for many stores at once; returns jobs enqueued.

    Raises like its steps (SafeguardUnavailable, SQLAlchemyError, a broker error); a failure
    after the commit leaves the jobs queued for the recovery sweep, markers withdrawn.
    """
    flight = sync_flight()
    planned = {sid: uuid.uuid4() for sid in store_ids}
    granted = flight.run_many("request", [(str(s), str(j), "") for s, j in planned.items()])
    folded = [sid for sid, ok in zip(planned, granted, strict=True) if int(ok) != 1]
    taken = _take_over_ended(folded, planned)
    chosen = [sid for sid, ok in zip(planned, granted, strict=True) if int(ok) == 1] + taken
    if not chosen:
        return 0
    tasks = {sid: str(uuid.uuid4()) for sid in chosen}
    try:
        with service_session() as session:
            params: dict[str, Any] = {
                "stores": chosen,
                "jobs": [planned[s] for s in chosen],
                "tasks": [tasks[s] for s in chosen],
                "trigger": SyncTrigger.RECONCILIATION.value,
                "full": SyncKind.FULL.value,
                "incremental": SyncKind.INCREMENTAL.value,
            }
            created = set(session.scalars(_INSERT, params))
    except BaseException:
        _cancel(chosen, planned)  # the jobs the markers name do not exist
        raise
    _cancel([s for s in chosen if s not in created], planned)  # paused since they were listed
    _publish([s for s in chosen if s in created], planned, tasks)
    return len(created)


def _take_over_ended(
    folded: list[uuid.UUID], planned: dict[uuid.UUID, uuid.UUID]
) -> list[uuid.UUID]:
    """Of the folded stores, those whose marker names an ended job and that this call took over."""
    if not folded:
        return []
    flight = sync_flight()
    holders = flight.run_many("holder", [(str(s), "", "") for s in folded])
    named = {
        sid: (h.decode() if isinstance(h, bytes) else str(h))
        for sid, h in zip(folded, holders, strict=True)
        if h is not None
    }
    ended = _ended_jobs(list(named.values()))
    # No marker at all (it lapsed since the request): take it over as well, like plan_sync.
    stale = [(sid, named.get(sid)) for sid in folded if sid not in named or named[sid] in ended]
    if not stale:
        return []
    took = flight.run_many("take_over", [(str(s), str(planned[s]), h or "") for s, h in stale])
    return [sid for (sid, _), ok in zip(stale, took, strict=True) if int(ok) == 1]


def _ended_jobs(job_ids: list[str]) -> set[str]:
    ids = []
    for job_id in job_ids:
        try:
            ids.append(uuid.UUID(job_id))
        except ValueError:
            continue  # a marker that names no job is live until it lapses (as has_ended)
    if not ids:
        return set()
    ended = [SyncJobStatus(s).value for s in ENDED]
    with service_session() as session:
        return {str(j) for j in session.scalars(_ENDED, {"ids": ids, "ended": ended})}


def _cancel(store_ids: Sequence[uuid.UUID], planned: dict[uuid.UUID, uuid.UUID]) -> None:
    if store_ids:
        sync_flight().run_many("cancel", [(str(s), str(planned[s]), "") for s in store_ids])


class _NoSentEvent:
    """An event dispatcher that drops Celery's ``task-sent`` event (``task_send_sent_event``).

    A reconciliation message needs none: its job row (committed before the message) already
    records it as queued, and Flower shows the task from the worker's ``task-received`` on. The
    event was a second broker round trip per message: ~26 % of a chunk's time (cProfile, 1,000
    stale stores: 0.74 s of 2.81 s).
    """

    def publish(self, *args: Any, **kwargs: Any) -> None:
        """Publish nothing."""


_NO_SENT_EVENT = _NoSentEvent()


def _publish(
    store_ids: list[uuid.UUID], planned: dict[uuid.UUID, uuid.UUID], tasks: dict[uuid.UUID, str]
) -> None:
    """Send each job's message over one broker connection, batched (no ``task-sent`` events);
    on a failure the unsent jobs' markers are withdrawn (their rows stay queued for the recovery
    sweep) and it raises.

    ``Producer.batch``: on Redis the messages go in one pipelined round trip at the end (one
    LPUSH round trip per message before); brokers without batching (RabbitMQ) publish each at
    once, as before. A batch whose flush fails has an uncertain outcome (kombu's
    BatchPublishError): its jobs count as unsent, so a message that did arrive may be sent again
    by the sweep, which the ledger makes harmless (a job runs once); none is lost.
    """
    sent = 0
    try:
        with app.producer_or_acquire() as producer:
            with producer.batch(max_size=PUBLISH_BATCH):
                for sid in store_ids:
                    app.send_task(
                        SYNC_TASK,
                        args=[str(sid)],
                        kwargs={"job_id": str(planned[sid])},
                        task_id=tasks[sid],
                        producer=producer,
                        event_dispatcher=_NO_SENT_EVENT,  # passed on to amqp.send_task_message
                        # Nothing reads a sync's Celery result (its job row is its record); with
                        # one, the publisher SUBSCRIBEs to each task's result channel on the
                        # Redis backend and UNSUBSCRIBEs when the AsyncResult is dropped: two
                        # round trips per message, 1.0 s of a 2.7 s cProfiled 1,000-store publish.
                        ignore_result=True,
                    )
            sent = len(store_ids)  # flushed when the batch closed
    except BaseException:
        log.warning(
            "reconciliation: %d of %d messages unsent", len(store_ids) - sent, len(store_ids)
        )
        _cancel(store_ids[sent:], planned)
        raise


__all__ = ["RECONCILE_SLICES", "reconcile_period_s", "reconcile_stores", "request_reconciliations"]
