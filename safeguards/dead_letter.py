"""The dead-letter archive: failed jobs kept complete (secrets removed), reviewed and replayed.

Replay knows no Celery: the task side injects ``enqueue``, a callable that sends the archived
job's task with its args, kwargs, headers and options and returns the new task id.
"""

from __future__ import annotations

import logging
import os
import socket
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models import FailedJobArchive, FailureCategory, ReviewResolution
from safeguards.errors import ArchiveEntryNotFound, ReplayRefused
from safeguards.redaction import redact, redact_text, truncate
from syncguard.db import service_session

logger = logging.getLogger(__name__)

#: Longest failure reason or exception message kept, in characters.
MAX_REASON_CHARS = 4_000
#: Longest traceback kept, in characters; its end, where the error is raised, is what is kept.
MAX_TRACEBACK_CHARS = 20_000
#: Entries a filter returns when it sets no limit.
DEFAULT_LIMIT = 100


@dataclass(frozen=True)
class ArchiveFilter:
    """Which archive entries to list or replay; unset fields do not filter."""

    category: FailureCategory | None = None
    store_id: uuid.UUID | None = None
    business_id: uuid.UUID | None = None
    #: Inclusive lower bound on ``created_at`` (when the job was archived).
    since: datetime | None = None
    #: Exclusive upper bound on ``created_at``.
    until: datetime | None = None
    reviewed: bool | None = None
    job_type: str | None = None
    limit: int = DEFAULT_LIMIT


@dataclass(frozen=True)
class ArchivedJob:
    """One archive entry: the complete job as it would be re-sent, and its review state."""

    id: uuid.UUID
    job_id: str
    job_type: str
    #: The task name to send; the archived ``job_data["task"]``.
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    headers: dict[str, Any]
    #: Send options: queue, routing_key, priority, ...
    options: dict[str, Any]
    failure_category: FailureCategory
    failure_reason: str
    retry_count: int
    error_context: dict[str, Any]
    store_id: uuid.UUID | None
    business_id: uuid.UUID | None
    reviewed: bool
    reviewed_by: str | None
    reviewed_at: datetime | None
    review_note: str | None
    resolution: ReviewResolution | None
    replay_count: int
    replayed_at: datetime | None
    replay_task_id: str | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: FailedJobArchive) -> ArchivedJob:
        """The entry held by an archive row."""
        data = row.job_data
        columns = {f.name: getattr(row, f.name) for f in fields(cls) if f.name not in _JOB_PARTS}
        return cls(
            **columns,
            task=str(data.get("task") or row.job_type),
            args=list(data.get("args") or []),
            kwargs=dict(data.get("kwargs") or {}),
            headers=dict(data.get("headers") or {}),
            options=dict(data.get("options") or {}),
        )


#: ArchivedJob fields read from ``job_data`` rather than from a column of their own.
_JOB_PARTS = frozenset({"task", "args", "kwargs", "headers", "options"})

#: Sends an archived job's task again and returns the new task id (supplied by the task side).
Enqueue = Callable[[ArchivedJob], str]


@dataclass(frozen=True)
class ReplayResult:
    """What a replay did: the new task id, or why the entry was skipped."""

    entry_id: uuid.UUID
    job_id: str
    replayed: bool
    replay_task_id: str | None = None
    replay_count: int = 0
    replayed_at: datetime | None = None
    #: Why the entry was not replayed (``replay_many`` only; ``replay`` raises instead).
    skipped_reason: str | None = None


@contextmanager
def _session_scope(session: Session | None) -> Iterator[Session]:
    """The caller's session (the caller commits), or a committed service transaction of our own."""
    if session is not None:
        yield session
    else:
        with service_session() as own:
            yield own


def move_to_dead_letter_queue(
    job_id: str,
    job_type: str,
    failure_reason: str,
    retry_count: int,
    job_data: Mapping[str, Any],
    *,
    failure_category: FailureCategory = FailureCategory.UNKNOWN,
    error_context: Mapping[str, Any] | None = None,
    store_id: uuid.UUID | None = None,
    business_id: uuid.UUID | None = None,
    session: Session | None = None,
) -> uuid.UUID:
    """Archive a failed job, secrets removed, once per ``job_id``; return the entry's id."""
    # A redelivered failure (acks_late) hits the unique job_id: the first archival stays as it
    # was and only ``updated_at`` moves, so the row a reviewer may already be reading is stable.
    statement = (
        insert(FailedJobArchive)
        .values(
            job_id=job_id,
            job_type=job_type,
            failure_reason=truncate(
                redact_text(failure_reason[: 4 * MAX_REASON_CHARS]), MAX_REASON_CHARS
            ),
            failure_category=FailureCategory(failure_category),
            retry_count=retry_count,
            job_data=redact(_complete_job(job_type, job_data)),
            error_context=redact(dict(error_context or {})),
            store_id=store_id,
            business_id=business_id,
        )
        .on_conflict_do_update(
            index_elements=[FailedJobArchive.job_id], set_={"updated_at": func.now()}
        )
        .returning(FailedJobArchive.id)
    )
    with _session_scope(session) as s:
        entry_id: uuid.UUID = s.execute(statement).scalar_one()
    logger.warning("job %s (%s) archived as %s: %s", job_id, job_type, entry_id, failure_category)
    return entry_id


def _complete_job(job_type: str, job_data: Mapping[str, Any]) -> dict[str, Any]:
    """``job_data`` with every part a replay reads present and of the right shape."""
    job = dict(job_data)
    job["task"] = job.get("task") or job_type
    job["args"] = list(job.get("args") or [])
    for part in ("kwargs", "headers", "options"):
        job[part] = dict(job.get(part) or {})
    return job


def error_context_from(
    exc: BaseException, *, worker: str | None = None, started_at: datetime | None = None
) -> dict[str, Any]:
    """The archive's error context for ``exc``: type, message, traceback, worker and times."""
    failed_at = datetime.now(UTC)
    if started_at is not None and started_at.tzinfo is None:
        started_at = started_at.replace(tzinfo=UTC)
    formatted = "".join(traceback.format_exception(exc))
    cause = exc.__cause__ or exc.__context__
    context: dict[str, Any] = redact(
        {
            "exception_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "exception_message": truncate(str(exc), MAX_REASON_CHARS),
            "traceback": formatted[-MAX_TRACEBACK_CHARS:],
            "cause": None if cause is None else f"{type(cause).__qualname__}: {cause}",
            "worker": worker or socket.gethostname(),
            "pid": os.getpid(),
            "started_at": None if started_at is None else started_at.isoformat(),
            "failed_at": failed_at.isoformat(),
            "duration_s": None if started_at is None else (failed_at - started_at).total_seconds(),
        }
    )
    return context


def get_entry(entry_id: uuid.UUID, *, session: Session | None = None) -> ArchivedJob | None:
    """The archive entry ``entry_id``, or None if there is none."""
    with _session_scope(session) as s:
        row = s.get(FailedJobArchive, entry_id, populate_existing=True)
        return None if row is None else ArchivedJob.from_row(row)


def list_entries(
    filter: ArchiveFilter | None = None, *, session: Session | None = None
) -> list[ArchivedJob]:
    """The entries ``filter`` matches, newest first, at most ``filter.limit``."""
    criteria = filter or ArchiveFilter()
    statement = (
        select(FailedJobArchive)
        .where(*_conditions(criteria))
        .order_by(FailedJobArchive.created_at.desc(), FailedJobArchive.id)
        .limit(criteria.limit)
    )
    with _session_scope(session) as s:
        return [ArchivedJob.from_row(row) for row in s.scalars(statement)]


def _conditions(criteria: ArchiveFilter) -> list[ColumnElement[bool]]:
    """The WHERE clauses of a filter."""
    table = FailedJobArchive
    conditions: list[ColumnElement[bool]] = []
    if criteria.category is not None:
        conditions.append(table.failure_category == FailureCategory(criteria.category))
    if criteria.store_id is not None:
        conditions.append(table.store_id == criteria.store_id)
    if criteria.business_id is not None:
        conditions.append(table.business_id == criteria.business_id)
    if criteria.since is not None:
        conditions.append(table.created_at >= criteria.since)
    if criteria.until is not None:
        conditions.append(table.created_at < criteria.until)
    if criteria.reviewed is not None:
        conditions.append(table.reviewed.is_(criteria.reviewed))
    if criteria.job_type is not None:
        conditions.append(table.job_type == criteria.job_type)
    return conditions


def review(
    entry_id: uuid.UUID,
    *,
    reviewer: str,
    note: str | None = None,
    resolution: ReviewResolution | None = None,
    session: Session | None = None,
) -> ArchivedJob:
    """Mark an entry reviewed by ``reviewer``; a note or resolution given replaces the old one."""
    values: dict[str, Any] = {
        "reviewed": True,
        "reviewed_by": reviewer,
        "reviewed_at": func.now(),
    }
    if note is not None:
        values["review_note"] = note
    if resolution is not None:
        values["resolution"] = ReviewResolution(resolution)
    with _session_scope(session) as s:
        return ArchivedJob.from_row(_update(s, entry_id, values))


def discard(
    entry_id: uuid.UUID, *, reviewer: str, note: str | None = None, session: Session | None = None
) -> ArchivedJob:
    """Mark an entry reviewed and resolved as discarded: it will not be replayed by a filter."""
    return review(
        entry_id,
        reviewer=reviewer,
        note=note,
        resolution=ReviewResolution.DISCARDED,
        session=session,
    )


def _update(s: Session, entry_id: uuid.UUID, values: dict[str, Any]) -> FailedJobArchive:
    """Apply ``values`` to one entry and return the updated row."""
    statement = (
        update(FailedJobArchive)
        .where(FailedJobArchive.id == entry_id)
        .values(values)
        .returning(FailedJobArchive)
        .execution_options(populate_existing=True)
    )
    row = s.scalars(statement).one_or_none()
    if row is None:
        raise ArchiveEntryNotFound(f"no dead-letter entry {entry_id}")
    return row


def replay(
    entry_id: uuid.UUID,
    *,
    enqueue: Enqueue,
    force: bool = False,
    replayed_by: str | None = None,
    session: Session | None = None,
) -> ReplayResult:
    """Send an entry's original task again and link the new task id; only once unless ``force``."""
    # Claim, enqueue and record in one transaction holding the row lock: a second operator is
    # refused at once, and an enqueue that raises rolls back leaving the entry unreplayed.
    with _session_scope(session) as s:
        row = _claim(s, entry_id)
        _check_replayable(row, force=force)
        replay_task_id = enqueue(ArchivedJob.from_row(row))
        return _record_replay(s, entry_id, replay_task_id, replayed_by)


def _record_replay(
    s: Session, entry_id: uuid.UUID, replay_task_id: str, replayed_by: str | None
) -> ReplayResult:
    """Link the new task id to the entry and resolve it as replayed."""
    values: dict[str, Any] = {
        "replay_task_id": replay_task_id,
        "replayed_at": func.now(),
        "replay_count": FailedJobArchive.replay_count + 1,
        "reviewed": True,
        "reviewed_at": func.coalesce(FailedJobArchive.reviewed_at, func.now()),
        "resolution": ReviewResolution.REPLAYED,
    }
    if replayed_by is not None:
        values |= {"reviewed_by": replayed_by, "reviewed_at": func.now()}
    row = _update(s, entry_id, values)
    logger.info("dead-letter entry %s (job %s) replayed as %s", row.id, row.job_id, replay_task_id)
    return ReplayResult(
        entry_id=row.id,
        job_id=row.job_id,
        replayed=True,
        replay_task_id=row.replay_task_id,
        replay_count=row.replay_count,
        replayed_at=row.replayed_at,
    )


def _claim(s: Session, entry_id: uuid.UUID) -> FailedJobArchive:
    """Lock the entry for this transaction, refusing if another transaction holds it."""
    statement = (
        select(FailedJobArchive)
        .where(FailedJobArchive.id == entry_id)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    row = s.scalars(statement).one_or_none()
    if row is not None:
        return row
    if s.scalar(select(FailedJobArchive.id).where(FailedJobArchive.id == entry_id)) is None:
        raise ArchiveEntryNotFound(f"no dead-letter entry {entry_id}")
    raise ReplayRefused(f"dead-letter entry {entry_id} is being replayed by someone else right now")


def _check_replayable(row: FailedJobArchive, *, force: bool) -> None:
    """Refuse a second replay, or the replay of a discarded entry, unless forced."""
    if force:
        return
    if row.replayed_at is not None:
        raise ReplayRefused(
            f"dead-letter entry {row.id} (job {row.job_id}) was already replayed at "
            f"{row.replayed_at.isoformat()} as task {row.replay_task_id}; "
            "pass force=True to replay it again"
        )
    if row.resolution == ReviewResolution.DISCARDED:
        raise ReplayRefused(
            f"dead-letter entry {row.id} (job {row.job_id}) was discarded by {row.reviewed_by}; "
            "pass force=True to replay it anyway"
        )


def replay_many(
    filter: ArchiveFilter,
    *,
    enqueue: Enqueue,
    force: bool = False,
    replayed_by: str | None = None,
) -> list[ReplayResult]:
    """Replay the entries ``filter`` matches, oldest first, each in its own transaction."""
    # Without force, entries already replayed or discarded are not even candidates; an entry
    # another operator claims meanwhile is reported as skipped. An enqueue error stops the
    # batch (the broker is likely down); the entries replayed before it stay recorded.
    results: list[ReplayResult] = []
    for entry_id, job_id in _replay_candidates(filter, force=force):
        try:
            results.append(replay(entry_id, enqueue=enqueue, force=force, replayed_by=replayed_by))
        except (ReplayRefused, ArchiveEntryNotFound) as skipped:
            results.append(
                ReplayResult(entry_id, job_id, replayed=False, skipped_reason=str(skipped))
            )
    return results


def _replay_candidates(criteria: ArchiveFilter, *, force: bool) -> list[tuple[uuid.UUID, str]]:
    """Ids and job ids of the entries a bulk replay will try, oldest first."""
    conditions = _conditions(criteria)
    if not force:
        conditions.append(FailedJobArchive.replayed_at.is_(None))
        conditions.append(FailedJobArchive.resolution.is_distinct_from(ReviewResolution.DISCARDED))
    statement = (
        select(FailedJobArchive.id, FailedJobArchive.job_id)
        .where(*conditions)
        .order_by(FailedJobArchive.created_at, FailedJobArchive.id)
        .limit(criteria.limit)
    )
    with service_session() as s:
        return [(entry_id, job_id) for entry_id, job_id in s.execute(statement)]
