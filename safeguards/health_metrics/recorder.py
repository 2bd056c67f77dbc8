"""Health metrics: recorded into an in-process buffer, written to PostgreSQL in batches.

A task's hot path only appends to a list; a daemon thread inserts the batch every few seconds
with one multi-row INSERT. If PostgreSQL is briefly unreachable the batch stays buffered and is
retried, so a database blip never fails a task; past ``max_buffered`` the oldest rows are dropped,
loudly (a warning and the ``dropped`` counter), never silently.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from models import Business, MetricType, Store, SystemHealthMetric
from safeguards.storable import storable_json
from syncguard.db import is_foreign_key_violation, service_session

log = logging.getLogger(__name__)

#: Seconds between background flushes.
FLUSH_INTERVAL_S = 2.0
#: Rows kept while the database is unreachable before the oldest are dropped.
MAX_BUFFERED = 50_000


@dataclass(frozen=True)
class Metric:
    """One measurement, as it will be stored in ``system_health_metrics``."""

    metric_type: MetricType
    metric_name: str
    metric_value: float
    unit: str | None = None
    tags: dict[str, Any] = field(default_factory=dict)
    business_id: uuid.UUID | None = None
    store_id: uuid.UUID | None = None
    measured_at: datetime = field(default_factory=lambda: datetime.now(UTC))


Writer = Callable[[Sequence[Metric]], None]


def write_metrics(metrics: Sequence[Metric]) -> None:
    """Insert ``metrics`` in one multi-row statement (the trigger fills business_id).

    A row about a store or business deleted since it was measured is written without that
    reference (the id kept in its tags as ``deleted_store_id`` / ``deleted_business_id``):
    otherwise the batch would fail the same way on every flush and hold every metric back.
    """
    rows = [asdict(m) for m in metrics]
    with service_session() as session:
        try:
            with session.begin_nested():
                session.execute(insert(SystemHealthMetric), rows)
            return
        except IntegrityError as exc:
            if not is_foreign_key_violation(exc):
                raise
        session.execute(insert(SystemHealthMetric), _without_deleted(session, rows))


def _without_deleted(session: Session, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with references to stores and businesses that no longer exist moved to tags."""
    live: dict[str, set[Any]] = {}
    for column, model in (("store_id", Store), ("business_id", Business)):
        wanted = {row[column] for row in rows if row[column] is not None}
        live[column] = set(session.scalars(select(model.id).where(model.id.in_(wanted))))
    cleaned = []
    for row in rows:
        row = {**row, "tags": dict(row["tags"])}
        for column, found in live.items():
            if row[column] is not None and row[column] not in found:
                row["tags"][f"deleted_{column}"] = str(row[column])
                row[column] = None
        cleaned.append(row)
    log.warning("metrics about deleted stores or businesses written without them")
    return cleaned


class MetricsBuffer:
    """A thread-safe buffer flushed in batches by a daemon thread started per process."""

    def __init__(
        self,
        writer: Writer = write_metrics,
        *,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        max_buffered: int = MAX_BUFFERED,
    ) -> None:
        self._writer = writer
        self._interval = flush_interval_s
        self._pending: deque[Metric] = deque(maxlen=max_buffered)
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._thread_pid: int | None = None
        #: Rows lost because the buffer overflowed while the database was unreachable.
        self.dropped = 0

    def record(self, metric: Metric) -> None:
        """Buffer ``metric``; never blocks on I/O."""
        self._ensure_thread()
        with self._lock:
            if len(self._pending) == self._pending.maxlen:
                self.dropped += 1
                log.warning("metrics buffer full: dropped the oldest row (%d so far)", self.dropped)
            self._pending.append(metric)

    def flush(self) -> int:
        """Write everything buffered; on a database error keep it for the next flush."""
        with self._flush_lock:
            with self._lock:
                batch = list(self._pending)
                self._pending.clear()
            if not batch:
                return 0
            try:
                self._writer(batch)
            except SQLAlchemyError as exc:
                log.warning("metrics flush failed, %d rows kept for retry: %s", len(batch), exc)
                with self._lock:
                    self._pending.extendleft(reversed(batch))
                return 0
            return len(batch)

    def pending(self) -> int:
        """Rows waiting to be written."""
        with self._lock:
            return len(self._pending)

    def _ensure_thread(self) -> None:
        # A forked worker child inherits the buffer but not the thread: start one per pid.
        pid = os.getpid()
        if self._thread_pid == pid:
            return
        with self._lock:
            if self._thread_pid == pid:
                return
            self._thread_pid = pid
            self._pending.clear()  # the parent's rows are the parent's to write
            threading.Thread(target=self._run, name="metrics-flusher", daemon=True).start()

    def _run(self) -> None:
        stop = threading.Event()
        while not stop.wait(self._interval):
            try:
                self.flush()
            except Exception:  # the flusher must outlive any single bad batch
                log.exception("metrics flusher crashed on a batch; continuing")


#: The process-wide buffer the task base class records into.
METRICS = MetricsBuffer()


def record_metric(
    metric_type: MetricType,
    metric_name: str,
    metric_value: float,
    *,
    unit: str | None = None,
    tags: dict[str, Any] | None = None,
    business_id: uuid.UUID | None = None,
    store_id: uuid.UUID | None = None,
) -> None:
    """Buffer one measurement for the next batched insert.

    Tags often carry a provider's text: they are made storable here, so one unstorable
    character cannot fail the batch insert of every buffered metric.
    """
    clean_tags: dict[str, Any] = storable_json(tags or {})
    METRICS.record(
        Metric(metric_type, metric_name, metric_value, unit, clean_tags, business_id, store_id)
    )
