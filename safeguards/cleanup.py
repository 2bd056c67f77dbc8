"""Retention cleanup: rows past retention deleted in short batches, one audit row per table.

Policies are data (SQL over ``:cutoff``); batches are short transactions with local timeouts.

The time-partitioned history tables (``safeguards.partitions``) lose whole days instead: a day
partition goes (detached and dropped) once its last instant is past the cutoff, and a
sub-partitioned day's leaf (successful deliveries) is truncated once past its own rule's cutoff.
The day that straddles the cutoff is kept whole, so a row outlives its retention by less than
one day (never goes early); only rows in the DEFAULT partition (a day with no partition yet)
are deleted row by row, exactly at the cutoff.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypedDict, Unpack, cast

from sqlalchemy import Connection, Engine, func, insert, text
from sqlalchemy.exc import SQLAlchemyError

from models import CleanupAuditLog, CleanupOutcome
from safeguards import partitions
from syncguard.db import get_engine
from syncguard.settings import Settings, get_settings

log = logging.getLogger(__name__)

#: Longest error message kept in the audit row, characters.
MAX_ERROR_CHARS = 2_000

# The outer predicate repeats the inner one on purpose: a row updated concurrently (an alert
# reopened, an entry un-reviewed) is re-checked on its new version before it is deleted.
_DELETE_BATCH = (
    "DELETE FROM {table} WHERE ctid = ANY(ARRAY("
    "SELECT ctid FROM {table} WHERE {condition} LIMIT :batch_size)) AND ({condition})"
)
_COUNT = "SELECT count(*) FROM {table} WHERE {condition}"
_SET_TIMEOUTS = text(  # milliseconds: the unit of both when none is given
    "SELECT set_config('lock_timeout', :lock, true), set_config('statement_timeout', :stmt, true)"
)
# ANALYZE by a non-owner silently does nothing: the migration's SECURITY DEFINER function runs
# it as the tables' owner, for the cleaned tables only.
_ANALYZE = text("SELECT syncguard_analyze(CAST(:table AS regclass))")


@dataclass(frozen=True)
class Rule:
    """Rows matching ``condition`` (SQL over ``:cutoff``) once older than the setting's days.

    ``leaf`` names the sub-partition of a day that holds exactly this rule's rows (``ok`` for
    ``<table>_pYYYYMMDD_ok``), emptied whole once the day is past this rule's cutoff.
    """

    condition: str
    retention_days: Callable[[Settings], int]
    leaf: str | None = None


@dataclass(frozen=True)
class RetentionPolicy:
    """What one table keeps; its rules are applied one after another, one audit row in all.

    A ``partitioned`` table loses whole day partitions (see the module's docstring); its rules'
    conditions then apply row by row to its DEFAULT partition only.
    """

    table: str
    rules: tuple[Rule, ...]
    partitioned: bool = False


@dataclass(frozen=True)
class CleanupResult:
    """One table's outcome in one run; in a dry run ``rows_deleted`` is what would be deleted."""

    run_id: uuid.UUID
    table: str
    outcome: CleanupOutcome
    rows_deleted: int
    duration_ms: int
    #: Duration of each batch that deleted rows, including its commit, milliseconds.
    batch_ms: tuple[float, ...] = ()
    #: False when the budget ran out before every row past retention was deleted.
    complete: bool = True
    analyzed: bool = False
    error_message: str | None = None
    #: Partitions dropped and leaves truncated (in a dry run: those that would be), by name.
    partitions: tuple[str, ...] = ()

    @property
    def max_batch_ms(self) -> float:
        """The longest batch, milliseconds (0 without batches)."""
        return max(self.batch_ms, default=0.0)


class CleanupOptions(TypedDict, total=False):
    """The keyword options every cleanup function takes (see ``apply_policy``)."""

    dry_run: bool
    now: datetime | None
    run_id: uuid.UUID | None
    settings: Settings | None
    engine: Engine | None


def within_budget(batches: int, elapsed_s: float, settings: Settings) -> bool:
    """Whether a table that ran ``batches`` in ``elapsed_s`` may run another batch."""
    max_batches, max_s = settings.cleanup_max_batches, settings.cleanup_max_seconds_per_table
    return batches < max_batches and elapsed_s < max_s


# fmt: off
#: Successful deliveries, then failed ones, each past its own retention.
DELIVERY_LOG = RetentionPolicy("webhook_delivery_log", (
    Rule("success AND created_at < :cutoff",
         lambda s: s.cleanup_delivery_success_retention_days, leaf="ok"),
    Rule("NOT success AND created_at < :cutoff",
         lambda s: s.cleanup_delivery_failure_retention_days, leaf="failed"),
), partitioned=True)
#: Exhausted outbound deliveries' dead-letter entries reviewed longer ago than retention (others
#: wait for an operator); created_at <= reviewed_at, its predicate is for (reviewed, created_at).
FAILED_DELIVERIES = RetentionPolicy("failed_job_archive", (
    Rule("failure_category = 'delivery_exhausted' AND reviewed"
         " AND created_at < :cutoff AND reviewed_at < :cutoff",
         lambda s: s.cleanup_failed_delivery_retention_days),
))
#: The outbound ledger's finished messages (delivered, archived, dropped), kept as long as
#: failed deliveries' log rows; queued or delivering ones are the sweep's, never deleted here.
OUTBOUND_MESSAGES = RetentionPolicy("outbound_messages", (
    Rule("status IN ('delivered', 'archived', 'dropped') AND updated_at < :cutoff",
         lambda s: s.cleanup_delivery_failure_retention_days),
))
#: System health metrics past retention.
HEALTH_METRICS = RetentionPolicy("system_health_metrics", (
    Rule("measured_at < :cutoff", lambda s: s.cleanup_health_metrics_retention_days),
), partitioned=True)
#: Subscription health readings past retention.
WEBHOOK_HEALTH = RetentionPolicy("webhook_health_log", (
    Rule("checked_at < :cutoff", lambda s: s.cleanup_webhook_health_retention_days),
), partitioned=True)
#: Alerts resolved longer ago than retention (open ones stay); raised_at <= resolved_at, its
#: predicate is for the (status, raised_at) index.
RESOLVED_ALERTS = RetentionPolicy("alerts", (
    Rule("status = 'resolved' AND raised_at < :cutoff AND resolved_at < :cutoff",
         lambda s: s.cleanup_resolved_alert_retention_days),
))
# fmt: on


def apply_policy(
    policy: RetentionPolicy,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    run_id: uuid.UUID | None = None,
    settings: Settings | None = None,
    engine: Engine | None = None,
) -> CleanupResult:
    """Delete (or count) ``policy``'s rows past retention and write its one audit row."""
    engine, settings = engine or get_engine(), settings or get_settings()
    reference = now or _database_now(engine)
    cutoffs = [reference - timedelta(days=rule.retention_days(settings)) for rule in policy.rules]
    started, done, counted = time.monotonic(), list[tuple[int, float]](), 0
    outcome = CleanupOutcome.DRY_RUN if dry_run else CleanupOutcome.SUCCESS
    error, complete, analyzed, expired = None, True, False, list[str]()
    try:
        if policy.partitioned:
            counted = partitions.expire_days(
                engine, policy.table, [(rule.leaf, before) for rule, before in
                                       zip(policy.rules, cutoffs, strict=True)],
                dry_run, expired, lambda conn: _set_timeouts(conn, settings),
            )  # fmt: skip
        # Rows are deleted in plain tables only (ctid is unique within one table): a partitioned
        # policy's rules in the DEFAULT partition, another policy's in every leaf it names.
        targets = _row_tables(engine, policy)
        for target in targets:
            if dry_run:
                counted += _count(engine, target, policy, cutoffs, settings)
            elif not _delete(engine, target, policy, cutoffs, settings, done):
                complete = False
                break
        deleted = sum(rows for rows, _ in done)
        if deleted >= settings.cleanup_analyze_after_rows and len(targets) == 1:
            analyzed = _analyze(engine, targets[0], settings)
    except SQLAlchemyError as exc:
        # One table failing must not stop the others: record it, loudly, and move on.
        log.exception("cleanup of %s failed after %d batches", policy.table, len(done))
        outcome, error, complete = CleanupOutcome.FAILED, _describe(exc), False
    rows_deleted = counted + sum(rows for rows, _ in done)
    duration_ms = round((time.monotonic() - started) * 1000)
    result = CleanupResult(
        run_id or uuid.uuid4(), policy.table, outcome, rows_deleted, duration_ms,
        tuple(ms for _, ms in done), complete, analyzed, error, tuple(expired),
    )  # fmt: skip
    _write_audit(engine, result)
    return result


def cleanup_webhook_delivery_logs(**options: Unpack[CleanupOptions]) -> CleanupResult:
    """Successful deliveries older than 7 days and failed ones older than 30 (settings)."""
    return apply_policy(DELIVERY_LOG, **options)


def cleanup_failed_webhook_deliveries(**options: Unpack[CleanupOptions]) -> CleanupResult:
    """Reviewed dead-letter entries of exhausted deliveries, 30 days after review (a setting)."""
    return apply_policy(FAILED_DELIVERIES, **options)


def cleanup_outbound_messages(**options: Unpack[CleanupOptions]) -> CleanupResult:
    """Finished outbound ledger rows older than failed deliveries' retention (a setting)."""
    return apply_policy(OUTBOUND_MESSAGES, **options)


def cleanup_old_health_metrics(**options: Unpack[CleanupOptions]) -> CleanupResult:
    """System health metrics older than 90 days (a setting)."""
    return apply_policy(HEALTH_METRICS, **options)


def cleanup_webhook_health_logs(**options: Unpack[CleanupOptions]) -> CleanupResult:
    """Subscription health readings older than their retention (a setting)."""
    return apply_policy(WEBHOOK_HEALTH, **options)


def cleanup_resolved_alerts(**options: Unpack[CleanupOptions]) -> CleanupResult:
    """Alerts resolved longer ago than their retention (a setting)."""
    return apply_policy(RESOLVED_ALERTS, **options)


#: Every policy ``run_all_cleanup_tasks`` applies, in order (one per cleanup function above).
POLICIES = (
    DELIVERY_LOG,
    OUTBOUND_MESSAGES,
    FAILED_DELIVERIES,
    HEALTH_METRICS,
    WEBHOOK_HEALTH,
    RESOLVED_ALERTS,
)


def run_all_cleanup_tasks(
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    settings: Settings | None = None,
    engine: Engine | None = None,
) -> list[CleanupResult]:
    """Run every cleanup under one run id and one reference time; a failure stays its table's."""
    engine = engine or get_engine()
    now, run_id = now or _database_now(engine), uuid.uuid4()
    return [
        apply_policy(
            policy, dry_run=dry_run, now=now, run_id=run_id, settings=settings, engine=engine
        )
        for policy in POLICIES
    ]


def _database_now(engine: Engine) -> datetime:
    with engine.connect() as conn:
        return cast(datetime, conn.execute(text("SELECT now()")).scalar_one())


def _set_timeouts(conn: Connection, settings: Settings) -> None:
    lock_ms, statement_ms = settings.cleanup_lock_timeout_ms, settings.cleanup_statement_timeout_ms
    conn.execute(_SET_TIMEOUTS, {"lock": str(lock_ms), "stmt": str(statement_ms)})


def _row_tables(engine: Engine, policy: RetentionPolicy) -> list[str]:
    if policy.partitioned:
        return [partitions.default_partition(policy.table)]
    with engine.connect() as conn:
        return partitions.leaves(conn, policy.table)


def _count(
    engine: Engine,
    table: str,
    policy: RetentionPolicy,
    cutoffs: list[datetime],
    settings: Settings,
) -> int:
    total = 0
    with engine.begin() as conn:
        _set_timeouts(conn, settings)
        for rule, before in zip(policy.rules, cutoffs, strict=True):
            statement = text(_COUNT.format(table=table, condition=rule.condition))
            total += conn.execute(statement, {"cutoff": before}).scalar_one()
    return total


def _delete(
    engine: Engine,
    table: str,
    policy: RetentionPolicy,
    cutoffs: list[datetime],
    settings: Settings,
    done: list[tuple[int, float]],
) -> bool:
    """Append (rows, ms) per batch to ``done``; True once nothing is left, False out of budget.

    ``table`` must be a plain table (a partition, never a partitioned parent): the batches pick
    rows by ctid, which is unique within one table only.
    """
    started, batch_size = time.monotonic(), settings.cleanup_batch_size
    for rule, before in zip(policy.rules, cutoffs, strict=True):
        statement = text(_DELETE_BATCH.format(table=table, condition=rule.condition))
        params, deleted = {"cutoff": before, "batch_size": batch_size}, batch_size
        while deleted == batch_size:
            if not within_budget(len(done), time.monotonic() - started, settings):
                log.warning("cleanup of %s ran out of budget; the next run goes on", policy.table)
                return False
            batch_started = time.perf_counter()
            with engine.begin() as conn:  # one short transaction per batch
                _set_timeouts(conn, settings)
                deleted = conn.execute(statement, params).rowcount
            if deleted:
                done.append((deleted, (time.perf_counter() - batch_started) * 1000))
    return True


def _analyze(engine: Engine, table: str, settings: Settings) -> bool:
    try:
        with engine.begin() as conn:
            _set_timeouts(conn, settings)
            conn.execute(_ANALYZE, {"table": table})
    except SQLAlchemyError:
        # The rows are gone either way; autovacuum's own analyze will catch up.
        log.warning("cleanup: ANALYZE %s failed", table, exc_info=True)
        return False
    return True


def _describe(exc: SQLAlchemyError) -> str:
    cause = getattr(exc, "orig", None) or exc
    return f"{type(cause).__name__}: {cause}".strip()[:MAX_ERROR_CHARS]


def _write_audit(engine: Engine, result: CleanupResult) -> None:
    statement = insert(CleanupAuditLog).values(
        run_id=result.run_id,
        table_name=result.table,
        rows_deleted=result.rows_deleted,
        duration_ms=result.duration_ms,
        outcome=result.outcome,
        error_message=result.error_message,
        started_at=func.clock_timestamp() - timedelta(milliseconds=result.duration_ms),
        finished_at=func.clock_timestamp(),
    )
    try:
        with engine.begin() as conn:
            conn.execute(statement)
    except SQLAlchemyError:
        log.exception("cleanup: no audit row for %s in run %s", result.table, result.run_id)
