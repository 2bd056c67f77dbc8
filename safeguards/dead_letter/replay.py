"""Replay of dead-letter entries: send an archived job's task again, at most once unless forced.

Replay knows no Celery: the task side injects ``enqueue``, a callable that sends the archived
job's task with its args, kwargs, headers and options and returns the new task id.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import FailedJobArchive, ReviewResolution
from safeguards.dead_letter.entries import (
    ArchivedJob,
    ArchiveFilter,
    filter_conditions,
    update_entry,
)
from safeguards.errors import ArchiveEntryNotFound, ReplayRefused
from syncguard.db import service_session, session_or_new

__all__ = ["Enqueue", "ReplayResult", "replay", "replay_many"]

logger = logging.getLogger(__name__)

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
    with session_or_new(session) as s:
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
    row = update_entry(s, entry_id, values)
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
    for entry_id, job_id in replay_candidates(filter, force=force):
        try:
            results.append(replay(entry_id, enqueue=enqueue, force=force, replayed_by=replayed_by))
        except (ReplayRefused, ArchiveEntryNotFound) as skipped:
            results.append(
                ReplayResult(entry_id, job_id, replayed=False, skipped_reason=str(skipped))
            )
    return results


def replay_candidates(criteria: ArchiveFilter, *, force: bool) -> list[tuple[uuid.UUID, str]]:
    """Ids and job ids of the entries a bulk replay will try, oldest first."""
    conditions = filter_conditions(criteria)
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
