"""Bookkeeping of ``sync_jobs`` rows: created before enqueueing, updated as a run progresses."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models import (
    FailedJobArchive,
    Store,
    StoreStatus,
    SyncJob,
    SyncJobStatus,
    SyncKind,
    SyncTrigger,
)
from safeguards.errors import ValidationFailure
from safeguards.storable import storable_text
from syncguard.db import service_session, session_or_new

#: States a job never leaves: a message for such a job is stale.
ENDED = frozenset({SyncJobStatus.SUCCEEDED, SyncJobStatus.FAILED, SyncJobStatus.ARCHIVED})


class StoreNotSyncable(ValidationFailure):
    """The store is paused, revoked or otherwise not active: no sync is requested for it."""

    def __init__(self, store_id: uuid.UUID, status: StoreStatus, reason: str | None) -> None:
        why = f": {reason}" if reason else ""
        super().__init__(f"store {store_id} is {status}{why}; not syncing it")
        self.store_id, self.status, self.reason = store_id, status, reason


def create_job(
    store_id: uuid.UUID,
    trigger: SyncTrigger,
    job_id: uuid.UUID | None = None,
    celery_task_id: str | None = None,
    *,
    session: Session | None = None,
) -> uuid.UUID:
    """A queued job for ``store_id``, committed (so it exists before its message does).

    ``job_id`` is the id the single flight's pending marker already names, when there is one;
    ``celery_task_id`` the id its message will carry (only that message may run it). With
    ``session`` the row is written in the caller's transaction, which must commit before the
    message is published (the webhook receivers: one transaction per notification).
    The one rule for every caller (application code, API, Beat, CLI): only an active store is
    synced. Raises ValidationFailure for an unknown store, StoreNotSyncable for an inactive one.
    """
    new_id = job_id or uuid.uuid4()
    with session_or_new(session) as s:
        # One statement: the row is written only for an active store, its kind read from the
        # store's cursor; the store is looked at again only to say why nothing was written.
        created = s.execute(insert_job(store_id, trigger, new_id, celery_task_id)).scalar()
        if created is None and s.get(SyncJob, new_id) is not None:
            raise ValidationFailure(f"sync job {new_id} exists already")
        if created is None:
            store = s.get(Store, store_id)
            if store is None:
                raise ValidationFailure(f"store {store_id} does not exist")
            raise StoreNotSyncable(store_id, store.status, store.status_reason)
        return new_id


def insert_job(
    store_id: uuid.UUID, trigger: SyncTrigger, job_id: uuid.UUID, celery_task_id: str | None
) -> Any:
    """``INSERT INTO sync_jobs … SELECT … FROM stores WHERE id = … AND status = 'active'
    ON CONFLICT (id) DO NOTHING RETURNING id``: the id when written, no row when the store is
    not active or the job exists already."""
    jobs = SyncJob.__table__.c
    kind = case(
        (func.coalesce(Store.sync_cursor, "") == "", literal(SyncKind.FULL, jobs.kind.type)),
        else_=literal(SyncKind.INCREMENTAL, jobs.kind.type),
    )
    row = select(
        literal(job_id, jobs.id.type),
        Store.business_id,
        Store.id,
        kind,
        literal(trigger, jobs.trigger.type),
        literal({}, jobs.checkpoint.type),
        literal(celery_task_id, jobs.celery_task_id.type),
        func.now(),
    ).where(Store.id == store_id, Store.status == StoreStatus.ACTIVE)
    columns = ["id", "business_id", "store_id", "kind", "trigger", "checkpoint"]
    statement = insert(SyncJob).from_select([*columns, "celery_task_id", "eta"], row)
    # A repeated attempt (same id) writes nothing and returns no row: the caller tells.
    return statement.on_conflict_do_nothing(index_elements=["id"]).returning(SyncJob.id)


#: The name api/receipt.py imports (one job-row statement for every writer).
_insert_job = insert_job


def start_job(
    store_id: uuid.UUID, job_id: str | None, celery_task_id: str, *, replay: bool = False
) -> SyncJob | None:
    """Mark the job running (creating it if the task was enqueued without one).

    None, touching nothing, for a stale message: its job has already ended (a redelivery after
    the job's last run, or an old continuation), or the job was handed to another message (the
    recovery sweep re-published it; ``celery_task_id`` is the fence). A ``replay`` from the
    dead-letter archive does run an ended job again, unless this very message already ran it.
    """
    with service_session() as session:
        job = _find(session, job_id, celery_task_id)
        if job is not None and _is_stale(job, celery_task_id, replay=replay):
            return None
        if job is None:
            job = SyncJob(store_id=store_id, kind=SyncKind.FULL, trigger=SyncTrigger.MANUAL)
            job.checkpoint = {}
            session.add(job)
        elif job.store_id != store_id:
            raise ValidationFailure(f"job {job.id} belongs to store {job.store_id}, not {store_id}")
        job.status = SyncJobStatus.RUNNING
        job.attempts = (job.attempts or 0) + 1
        job.celery_task_id = celery_task_id
        job.started_at = job.started_at or datetime.now(UTC)
        session.flush()
        return job


def _is_stale(job: SyncJob, celery_task_id: str, *, replay: bool) -> bool:
    if job.status in ENDED:
        return not replay or job.celery_task_id == celery_task_id
    # A live job belongs to the message it names; an older one (a message the sweep gave up
    # on and re-published, now redelivered after all) must not run it a second time.
    superseded = job.celery_task_id not in (None, celery_task_id)
    return superseded and not replay


def is_stale_message(job_id: str | None, celery_task_id: str, *, replay: bool) -> bool:
    """True when this message must not run: its job ended or belongs to another message.

    Read only (``start_job`` decides again under the row lock); False for an unknown job.
    """
    if job_id is None:
        return False
    try:
        key = uuid.UUID(job_id)
    except ValueError:
        return False  # start_job raises the ValidationFailure that archives it
    with service_session() as session:
        job = session.get(SyncJob, key)
        return job is not None and _is_stale(job, celery_task_id, replay=replay)


def _find(session: Any, job_id: str | None, celery_task_id: str) -> SyncJob | None:
    if job_id is not None:
        try:
            key = uuid.UUID(job_id)
        except ValueError as exc:
            raise ValidationFailure(f"job_id={job_id!r} is not a UUID") from exc
        job = session.get(SyncJob, key, with_for_update=True)
        if job is None:
            raise ValidationFailure(f"sync job {job_id} does not exist")
        return job  # type: ignore[no-any-return]
    stmt = select(SyncJob).where(SyncJob.celery_task_id == celery_task_id).with_for_update()
    return session.scalars(stmt).first()  # type: ignore[no-any-return]


def set_status(
    job_id: uuid.UUID, status: SyncJobStatus, *, session: Session | None = None, **values: Any
) -> None:
    """Move the job to ``status``; final states stamp ``finished_at``. With ``session``, in the
    caller's transaction."""
    final = status in (SyncJobStatus.SUCCEEDED, SyncJobStatus.FAILED, SyncJobStatus.ARCHIVED)
    if final:
        values.setdefault("finished_at", func.now())
    if isinstance(values.get("error_message"), str):  # often a provider's error text
        values["error_message"] = storable_text(values["error_message"])
    with session_or_new(session) as s:
        s.execute(update(SyncJob).where(SyncJob.id == job_id).values(status=status, **values))


def owns(job_id: uuid.UUID, celery_task_id: str) -> bool:
    """True while the ledger names message ``celery_task_id`` as the one running the job.

    Asked while the message holds the store's lease: the recovery sweep never re-publishes a
    running job whose lease is alive, so the answer holds for as long as the lease does.
    """
    with service_session() as session:
        row = session.execute(
            select(SyncJob.status, SyncJob.celery_task_id).where(SyncJob.id == job_id)
        ).first()
    return row is not None and tuple(row) == (SyncJobStatus.RUNNING, celery_task_id)


def follow_up_id(job_id: uuid.UUID) -> uuid.UUID:
    """The id of job ``job_id``'s one follow-up: derived, so a repeated attempt to end the job
    names (and creates) the same follow-up, never a second one."""
    return uuid.uuid5(job_id, "follow-up")


def count_deferral(job_id: uuid.UUID, reason: str, countdown_s: float) -> None:
    """The job waits for a safeguard: one more deferral, why, and when it starts again."""
    set_status(
        job_id,
        SyncJobStatus.DEFERRED,
        deferrals=SyncJob.deferrals + 1,
        error_message=reason,
        eta=starts_in(countdown_s),
    )


def starts_in(countdown_s: float) -> Any:
    """The database's now() plus ``countdown_s`` seconds: a job's ``eta`` on its own clock."""
    return func.now() + timedelta(seconds=max(countdown_s, 0.0))


def has_ended(job_id: str, session: Session | None = None) -> bool:
    """True when the ledger holds job ``job_id`` in a final state; False if live or unknown.

    An unknown id is taken as live: the job a pending marker names is created just after the
    marker, and a marker whose job never appears lapses after the queue bound anyway.
    """
    try:
        key = uuid.UUID(job_id)
    except ValueError:
        return False  # a marker that names no job (an older release's "1")
    with session_or_new(session) as s:
        status = s.scalar(select(SyncJob.status).where(SyncJob.id == key))
    return status in ENDED


def archived_entry(celery_task_id: str) -> FailedJobArchive | None:
    """The archive entry of the message ``celery_task_id``, if it was archived."""
    with service_session() as session:
        stmt = select(FailedJobArchive).where(FailedJobArchive.job_id == celery_task_id)
        return session.scalars(stmt).first()


def job_for_task(celery_task_id: str) -> uuid.UUID | None:
    """The job a Celery task id is working on."""
    with service_session() as session:
        stmt = select(SyncJob.id).where(SyncJob.celery_task_id == celery_task_id)
        return session.scalars(stmt).first()
