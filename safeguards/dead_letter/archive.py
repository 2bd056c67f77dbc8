"""The dead-letter archive: failed jobs kept complete (secrets removed), reviewed and replayed.

Archiving, error context and review are here; replay is in ``safeguards.dead_letter.replay``
and the entry types in ``safeguards.dead_letter.entries``, both re-exported from here.
"""

from __future__ import annotations

import logging
import os
import socket
import traceback
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, literal, select, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningInsert

from models import FailedJobArchive, FailureCategory, ReviewResolution
from safeguards.dead_letter.entries import (
    DEFAULT_LIMIT,
    ArchivedJob,
    ArchiveFilter,
    filter_conditions,
    update_entry,
)
from safeguards.dead_letter.replay import Enqueue, ReplayResult, replay, replay_many
from safeguards.redaction import redact, redact_text, truncate
from safeguards.storable import storable_json, storable_text
from syncguard.db import is_foreign_key_violation, session_or_new

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_REASON_CHARS",
    "MAX_TRACEBACK_CHARS",
    "ArchiveFilter",
    "ArchivedJob",
    "Enqueue",
    "ReplayResult",
    "discard",
    "error_context_from",
    "get_entry",
    "list_entries",
    "move_to_dead_letter_queue",
    "replay",
    "replay_many",
    "review",
]

logger = logging.getLogger(__name__)

#: Longest failure reason or exception message kept, in characters.
MAX_REASON_CHARS = 4_000
#: Longest traceback kept, in characters; its end, where the error is raised, is what is kept.
MAX_TRACEBACK_CHARS = 20_000


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
            # Provider text reaches the archive in reasons and contexts: made storable, so an
            # unstorable character can never turn archiving into a requeue loop.
            failure_reason=storable_text(
                truncate(redact_text(failure_reason[: 4 * MAX_REASON_CHARS]), MAX_REASON_CHARS)
            ),
            failure_category=FailureCategory(failure_category),
            retry_count=retry_count,
            job_data=storable_json(redact(_complete_job(job_type, job_data))),
            error_context=storable_json(redact(dict(error_context or {}))),
            store_id=store_id,
            business_id=business_id,
        )
        .on_conflict_do_update(
            index_elements=[FailedJobArchive.job_id], set_={"updated_at": func.now()}
        )
        .returning(FailedJobArchive.id)
    )
    with session_or_new(session) as s:
        entry_id = _insert_entry(s, statement, store_id=store_id, business_id=business_id)
    logger.warning("job %s (%s) archived as %s: %s", job_id, job_type, entry_id, failure_category)
    return entry_id


def _insert_entry(
    s: Session,
    statement: ReturningInsert[uuid.UUID],
    *,
    store_id: uuid.UUID | None,
    business_id: uuid.UUID | None,
) -> uuid.UUID:
    """Insert the entry; a store or business that no longer exists is left out, and noted.

    Such an entry could never be written as it stands (its references would dangle for ever),
    and a job that cannot be archived goes back to the broker: without this it would loop.
    The ids given are kept in ``error_context["dangling_references"]`` (and ``job_data``).
    """
    attempts: list[dict[str, None]] = [{}]
    if store_id is not None:
        attempts.append({"store_id": None})
    if business_id is not None:
        attempts.append({**attempts[-1], "business_id": None})
    for dropped in attempts:
        try:
            with s.begin_nested():  # a savepoint: the caller's transaction stays usable
                entry_id: uuid.UUID = s.execute(statement.values(dropped)).scalar_one()
        except IntegrityError as exc:
            if not is_foreign_key_violation(exc) or dropped is attempts[-1]:
                raise
            continue
        if dropped:
            given = {"store_id": store_id, "business_id": business_id}
            _note_dangling(s, entry_id, {column: str(given[column]) for column in dropped})
        return entry_id
    raise AssertionError("unreachable: the last attempt returns or raises")


def _note_dangling(s: Session, entry_id: uuid.UUID, dangling: dict[str, str]) -> None:
    logger.warning("archive entry %s written without %s: no longer exist", entry_id, dangling)
    note = literal({"dangling_references": dangling}, type_=JSONB)
    s.execute(
        update(FailedJobArchive)
        .where(FailedJobArchive.id == entry_id)
        .values(error_context=FailedJobArchive.error_context.op("||")(note))
    )


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
    with session_or_new(session) as s:
        row = s.get(FailedJobArchive, entry_id, populate_existing=True)
        return None if row is None else ArchivedJob.from_row(row)


def list_entries(
    filter: ArchiveFilter | None = None, *, session: Session | None = None
) -> list[ArchivedJob]:
    """The entries ``filter`` matches, newest first, at most ``filter.limit``."""
    criteria = filter or ArchiveFilter()
    statement = (
        select(FailedJobArchive)
        .where(*filter_conditions(criteria))
        .order_by(FailedJobArchive.created_at.desc(), FailedJobArchive.id)
        .limit(criteria.limit)
    )
    with session_or_new(session) as s:
        return [ArchivedJob.from_row(row) for row in s.scalars(statement)]


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
    with session_or_new(session) as s:
        return ArchivedJob.from_row(update_entry(s, entry_id, values))


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
