"""The dead-letter archive's entries as values, and the two queries every archive verb shares.

``archive`` (archive, review) and ``replay`` both build on these, so neither imports the other
for them: no import cycle.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, update
from sqlalchemy.orm import Session

from models import FailedJobArchive, FailureCategory, ReviewResolution
from safeguards.errors import ArchiveEntryNotFound

__all__ = ["DEFAULT_LIMIT", "ArchiveFilter", "ArchivedJob", "filter_conditions", "update_entry"]

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


def filter_conditions(criteria: ArchiveFilter) -> list[ColumnElement[bool]]:
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


def update_entry(s: Session, entry_id: uuid.UUID, values: dict[str, Any]) -> FailedJobArchive:
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
