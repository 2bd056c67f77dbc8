"""``/api/v1/jobs``: the sync job ledger, which outlives Flower's in-memory task history.

Every accepted sync has a ``sync_jobs`` row before its message is published and keeps it after
(design: "PostgreSQL is the durable record and the job ledger"), so this history survives a
restart of Flower, of the workers and of the broker. A job's archive entry, when it ended in the
dead-letter archive, is the ``failed_job_archive`` row whose ``job_id`` is the job's Celery task
id (the archive keys entries by task id, tasks/base.py) or the job's own id (the recovery
sweep's entries, tasks/recovery.py). Reads go through the caller's key: a tenant's session is
scoped to its business by row-level security.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from api.auth import Caller, GuardedRoute, read_session, scope
from api.params import DEFAULT_LIMIT, Listing
from models import FailedJobArchive, SyncJob, SyncJobStatus, SyncTrigger
from safeguards import dead_letter

router = APIRouter(prefix="/jobs", route_class=GuardedRoute)


@dataclasses.dataclass(frozen=True)
class JobFilter:
    """Which jobs a listing returns: each field None means "any"; newest ``limit`` first."""

    store_id: uuid.UUID | None = None
    business_id: uuid.UUID | None = None
    status: SyncJobStatus | None = None
    trigger: SyncTrigger | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = DEFAULT_LIMIT


def job_json(job: SyncJob, archive_entry_id: uuid.UUID | None) -> dict[str, Any]:
    """A job as JSON-ready data; ``duration_s`` is finished minus started, seconds, or None."""
    duration_s = None
    if job.started_at is not None and job.finished_at is not None:
        duration_s = (job.finished_at - job.started_at).total_seconds()
    return {
        "id": job.id,
        "business_id": job.business_id,
        "store_id": job.store_id,
        "kind": job.kind,
        "trigger": job.trigger,
        "status": job.status,
        "attempts": job.attempts,
        "deferrals": job.deferrals,
        "recoveries": job.recoveries,
        "checkpoint": job.checkpoint,
        "pages_processed": job.pages_processed,
        "messages_upserted": job.messages_upserted,
        "messages_deleted": job.messages_deleted,
        "celery_task_id": job.celery_task_id,
        "continuation_of": job.continuation_of,
        "error_message": job.error_message,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "duration_s": duration_s,
        "archive_entry_id": archive_entry_id,
    }


def list_jobs(session: Session, criteria: JobFilter) -> list[dict[str, Any]]:
    """The jobs ``criteria`` selects, newest first, each with its archive entry's id."""
    statement: Select[Any] = _with_archive(select(SyncJob))
    for column, value in (
        (SyncJob.store_id, criteria.store_id),
        (SyncJob.business_id, criteria.business_id),
        (SyncJob.status, criteria.status),
        (SyncJob.trigger, criteria.trigger),
    ):
        if value is not None:
            statement = statement.where(column == value)
    if criteria.since is not None:
        statement = statement.where(SyncJob.created_at >= criteria.since)
    if criteria.until is not None:
        statement = statement.where(SyncJob.created_at < criteria.until)
    statement = statement.order_by(SyncJob.created_at.desc(), SyncJob.id).limit(criteria.limit)
    return [job_json(job, entry_id) for job, entry_id in session.execute(statement).all()]


def get_job(session: Session, job_id: uuid.UUID) -> dict[str, Any] | None:
    """One job with its archive entry in full (``archive_entry``), or None if not visible."""
    row = session.execute(_with_archive(select(SyncJob)).where(SyncJob.id == job_id)).first()
    if row is None:
        return None
    job, entry_id = row
    data = job_json(job, entry_id)
    entry = None if entry_id is None else dead_letter.get_entry(entry_id, session=session)
    data["archive_entry"] = None if entry is None else dataclasses.asdict(entry)
    return data


def _with_archive(statement: Select[Any]) -> Select[Any]:
    archive = FailedJobArchive
    matches = or_(
        archive.job_id == SyncJob.celery_task_id,
        archive.job_id == SyncJob.id.cast(archive.job_id.type),
    )
    entry_id = select(archive.id).where(matches).limit(1).scalar_subquery()
    return statement.add_columns(entry_id.label("archive_entry_id"))


@router.get("")
def jobs(
    caller: Caller,
    window: Listing,
    store_id: uuid.UUID | None = None,
    status: SyncJobStatus | None = None,
    trigger: SyncTrigger | None = None,
    business_id: uuid.UUID | None = None,
) -> JSONResponse:
    """Sync jobs newest first, filtered by store, status, trigger and created since/until."""
    business = scope(caller, business_id)
    criteria = JobFilter(
        store_id, business, status, trigger, window.since, window.until, window.limit
    )
    with read_session(caller) as session:
        found = list_jobs(session, criteria)
    return JSONResponse(jsonable_encoder({"jobs": found}))


@router.get("/{job_id}")
def job(caller: Caller, job_id: uuid.UUID) -> JSONResponse:
    """One sync job: progress, checkpoint, duration and, when archived, its archive entry."""
    with read_session(caller) as session:
        found = get_job(session, job_id)
    if found is None:
        raise HTTPException(404, f"no sync job {job_id}")
    return JSONResponse(jsonable_encoder(found))
