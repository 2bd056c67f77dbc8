"""The recovery sweep: the ledger, not the broker, decides that a job must run again.

Every ``sync_store`` job has its ``sync_jobs`` row before its message exists, and the row names
the one message allowed to run it (``celery_task_id``, the fence). Beat runs this sweep every
``sync_recovery_sweep_s``; it finds, from PostgreSQL alone, the unfinished jobs nothing will
finish:

- **running** with no page committed for a lease period (``updated_at`` older than
  ``sync_lease_s``) and no live lease in Redis: its worker died (SIGKILL, OOM, lost node). A
  live run commits a page, and renews its lease, at least once per lease period.
- **queued or deferred** past their expected start (``eta``: publication plus countdown) by
  more than ``sync_queue_bound_s``: the broker lost the message, or a worker holding it for its
  countdown died with it.

Each is re-published from its last checkpoint (the same row; the pipeline resumes) under a new
task id, in one compare-and-set ``UPDATE`` on the row as the sweep read it: two sweeps (two
Beats) never both win, and a job that moved meanwhile is left alone. The old message, should
the broker still deliver it later (a visibility timeout), is stale and acknowledged unrun;
a zombie run of it cannot commit a page (the page's ``UPDATE`` is fenced on the task id). A job
the sweep would re-publish more than ``sync_max_recoveries`` times is archived as
``recovery_exhausted``; a job whose message was archived but whose row was never closed (the
database failed in between) is closed as archived.

The recovery bound: once the fault clears, a job whose worker died runs again within
``sync_lease_s`` + ``sync_recovery_sweep_s`` (+ its wait in the queue), one whose message was
lost within its countdown + ``sync_queue_bound_s`` + ``sync_recovery_sweep_s``. Redis holds only
accelerators: with its keys gone the rows still say what to recover. A job's pending marker
(and the dirty flag of requests folded into it) lives for ``sync_queue_bound_s`` +
``sync_recovery_sweep_s`` + ``sync_lease_s`` past its expected start or last renewal, so it is
still there when the sweep re-publishes the job, which re-arms it: the fold survives any number
of recoveries, and a job archived here still gets its follow-up (tasks/sync/ending.py; a marker
that lived for the bound alone lapsed just before the sweep when a job waited in a backlog).
The queue bound must also
exceed the longest time a healthy queue makes a job wait: a job merely stuck behind a backlog
longer than that is recovered (its old message then turns stale, harmless) and, after
``sync_max_recoveries`` such sweeps, archived as ``recovery_exhausted`` (replayable).

What the other safeguarded work needs (per kind, and why):

- **Subscription work** (tasks/webhooks.py; asked for by tasks/renewal.py): no rows of its own;
  the stores and their ``webhook_subscriptions`` rows are its ledger. Beat's renewal pass (every
  300 s) and health pass (every 60 s) re-derive renewals: a lost renewal message leaves the
  subscription inside its renewal window (hours wide), and the next pass after the renewal
  cooldown (``renewal_request_cooldown_s``) enqueues it again. The renewal pass also enqueues
  ``create_subscription`` for every active, connected store with no pending, active, expired or
  failed subscription (and no unreviewed archived creation), once per cooldown per store: a lost
  creation (or recreation) is enqueued again by the first pass after its cooldown.
- **Outbound deliveries** (tasks/outbound/): ``publish_event`` commits one ``outbound_messages``
  row per endpoint, naming its task id, before publishing; tasks/outbound/ledger.py holds the
  rows' rules and the sweep Beat runs for them (the same compare-and-set as here).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from redis import RedisError
from sqlalchemy import CursorResult, and_, func, or_, select, true, update
from sqlalchemy.orm import Session

from models import FailureCategory, MetricType, SyncJob, SyncJobStatus
from safeguards.dead_letter.archive import move_to_dead_letter_queue
from safeguards.errors import SafeguardUnavailable
from safeguards.health_metrics.recorder import record_metric
from safeguards.redis_state import get_redis, key
from syncguard.db import service_session, session_or_new
from syncguard.settings import get_settings
from tasks import app
from tasks.sync.ending import end_job
from tasks.sync.jobs import archived_entry
from tasks.sync.requests import SYNC_TASK, publish, sync_flight

log = logging.getLogger(__name__)

#: The sweep's task name (Beat's schedule names it).
RECOVER_TASK = "tasks.recovery.recover_sync_jobs"


@dataclass(frozen=True)
class Candidate:
    """An unfinished job as the sweep read it; the compare-and-set checks it is unchanged."""

    id: uuid.UUID
    store_id: uuid.UUID
    status: SyncJobStatus
    celery_task_id: str | None
    recoveries: int
    updated_at: datetime


@app.task(name=RECOVER_TASK)  # type: ignore[untyped-decorator]
def recover_sync_jobs(store_ids: list[str] | None = None) -> dict[str, int]:
    """One sweep: counts of jobs ``recovered``, ``exhausted`` (archived) and ``closed``.

    ``store_ids`` limits the sweep to those stores (Beat sweeps them all).
    """
    counts = {"recovered": 0, "exhausted": 0, "closed": 0}
    for candidate in overdue_jobs(store_ids):
        if candidate.status is SyncJobStatus.RUNNING and _lease_alive(candidate):
            continue
        outcome = recover(candidate)
        if outcome is not None:
            counts[outcome] += 1
    if any(counts.values()):
        log.warning("recovery sweep: %s", counts)
    for outcome, count in counts.items():
        if count:  # dashboards and alerts see recoveries as they happen
            record_metric(MetricType.QUEUE, "sync_jobs_recovered", count, tags={"outcome": outcome})
    return counts


def overdue_jobs(store_ids: list[str] | None = None) -> list[Candidate]:
    """Unfinished jobs quiet for longer than a live one can be (see the module docstring)."""
    settings = get_settings()
    lease = timedelta(seconds=settings.sync_lease_s)
    bound = timedelta(seconds=settings.sync_queue_bound_s)
    waiting = (SyncJobStatus.QUEUED, SyncJobStatus.DEFERRED)
    stmt = (
        select(
            SyncJob.id,
            SyncJob.store_id,
            SyncJob.status,
            SyncJob.celery_task_id,
            SyncJob.recoveries,
            SyncJob.updated_at,
        )
        .where(
            or_(
                and_(
                    SyncJob.status == SyncJobStatus.RUNNING, SyncJob.updated_at < func.now() - lease
                ),
                and_(
                    SyncJob.status.in_(waiting),
                    func.coalesce(SyncJob.eta, SyncJob.updated_at) < func.now() - bound,
                ),
            )
        )
        .where(SyncJob.store_id.in_([uuid.UUID(s) for s in store_ids]) if store_ids else true())
        .order_by(SyncJob.updated_at)
        .limit(settings.sync_recovery_batch)
    )
    with service_session() as session:
        return [Candidate(*row) for row in session.execute(stmt).all()]


def recover(candidate: Candidate) -> str | None:
    """Close, archive or re-publish one overdue job; None when another sweep or run won."""
    if candidate.celery_task_id and (entry := archived_entry(candidate.celery_task_id)):
        task_id, entry_id = candidate.celery_task_id, entry.id

        def close(session: Session) -> bool:
            return _claim(candidate, SyncJobStatus.ARCHIVED, task_id, entry_id, session)

        # Closed together with the follow-up of requests folded into it (tasks/sync/ending.py).
        if end_job(candidate.store_id, candidate.id, SyncJobStatus.ARCHIVED, close=close):
            return "closed"
        return None
    task_id = str(uuid.uuid4())
    exhausted = candidate.recoveries >= get_settings().sync_max_recoveries
    if not _claim(candidate, SyncJobStatus.QUEUED, task_id, None):
        return None
    if exhausted:
        _archive_exhausted(candidate, task_id)
        return "exhausted"
    _rearm(candidate)
    try:
        publish(candidate.store_id, candidate.id, task_id)
    except Exception:  # still queued with a fresh eta: the sweep after the queue bound retries
        log.exception("re-publishing sync job %s failed", candidate.id)
        return None
    log.warning("recovered sync job %s (%s) as task %s", candidate.id, candidate.status, task_id)
    return "recovered"


def _claim(
    candidate: Candidate,
    status: SyncJobStatus,
    task_id: str,
    entry_id: uuid.UUID | None,
    session: Session | None = None,
) -> bool:
    """Compare-and-set: move the job on only if it is exactly as the sweep read it (in
    ``session``'s transaction when given)."""
    values: dict[str, Any] = {"status": status, "celery_task_id": task_id}
    if entry_id is not None:
        values.update(finished_at=func.now(), error_message=f"archived as {entry_id}")
    else:
        was = f"recovered from {candidate.status.value} by the sweep"
        values.update(recoveries=SyncJob.recoveries + 1, eta=func.now(), error_message=was)
    stmt = (
        update(SyncJob)
        .where(
            SyncJob.id == candidate.id,
            SyncJob.status == candidate.status,
            SyncJob.updated_at == candidate.updated_at,
            SyncJob.celery_task_id.is_not_distinct_from(candidate.celery_task_id),
        )
        .values(**values)
    )
    with session_or_new(session) as s:
        result = cast(CursorResult[Any], s.execute(stmt))
        return result.rowcount == 1


def _archive_exhausted(candidate: Candidate, task_id: str) -> None:
    """The job was recovered too often: archive it (replayable) and free its store."""
    recoveries = candidate.recoveries + 1
    reason = f"sync job {candidate.id} recovered {recoveries} times; its runs never finished"
    job_data = {
        "task": SYNC_TASK,
        "args": [str(candidate.store_id)],
        "kwargs": {"job_id": str(candidate.id)},
        "headers": {},
        "options": {"queue": None, "priority": None},
        "retries": 0,
    }
    entry_id = move_to_dead_letter_queue(
        task_id,
        SYNC_TASK,
        reason,
        0,
        job_data,
        failure_category=FailureCategory.RECOVERY_EXHAUSTED,
        error_context={"recoveries": recoveries, "last_status": candidate.status.value},
        store_id=candidate.store_id,
    )
    # Should this fail, the job stays queued and the next sweep past the bound archives it
    # (the archive is written once per task id; the next attempt has a new one).
    message = f"archived as {entry_id}"
    end_job(candidate.store_id, candidate.id, SyncJobStatus.ARCHIVED, error_message=message)


def _rearm(candidate: Candidate) -> None:
    """The job is pending again (see ``sync_flight``), and so are requests folded into it.

    Only a marker that names this job (or none) is touched: a newer job's stays its own.
    """
    flight, store = sync_flight(), str(candidate.store_id)
    try:
        if flight.holder(store) in (None, str(candidate.id)):
            flight.requeue(store, str(candidate.id), 0.0)
    except (RedisError, SafeguardUnavailable) as exc:  # an accelerator only
        log.warning("re-arming the pending marker of store %s failed: %s", store, exc)


def _lease_alive(candidate: Candidate) -> bool:
    """True while some run of this job holds its store's lease; False if Redis cannot say."""
    try:
        holder = get_redis().get(key("sync", str(candidate.store_id), "lease"))
    except RedisError:
        return False  # the ledger's view alone: no page committed for a whole lease period
    if isinstance(holder, bytes):
        holder = holder.decode()
    # The lease names ``<job id>/<task id>`` (tasks/sync/lease.py): any message of this job.
    return isinstance(holder, str) and holder.split("/")[0] == str(candidate.id)
