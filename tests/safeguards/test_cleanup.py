"""Retention cleanup on the real database: boundaries, dry runs, audit rows, failures, batching."""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, create_engine, text

from beat_schedule import BEAT_SCHEDULE
from models import CleanupOutcome
from safeguards.cleanup import (
    POLICIES,
    cleanup_webhook_delivery_logs,
    run_all_cleanup_tasks,
    within_budget,
)
from syncguard.db import service_session
from syncguard.settings import Settings, get_settings
from tests.factories import make_business, make_store

SECOND = timedelta(seconds=1)
TABLES = [policy.table for policy in POLICIES]


def _settings(**update: Any) -> Settings:
    return get_settings().model_copy(update=update)


@pytest.fixture
def now(engine: Engine) -> datetime:
    """The database's clock, after every row already past retention was cleaned away."""
    with engine.connect() as conn:
        current: datetime = conn.execute(text("SELECT now()")).scalar_one()
    run_all_cleanup_tasks(now=current)  # other tests' old rows must not blur the counts
    return current


@dataclass
class Rows:
    """Ids of the rows a test inserted, per table: those past retention and those to keep."""

    past: dict[str, set[uuid.UUID]] = field(default_factory=lambda: {t: set() for t in TABLES})
    kept: dict[str, set[uuid.UUID]] = field(default_factory=lambda: {t: set() for t in TABLES})

    def add(self, conn: Connection, table: str, past: bool, sql: str, **params: Any) -> None:
        row_id = conn.execute(text(sql + " RETURNING id"), params).scalar_one()
        (self.past if past else self.kept)[table].add(row_id)


DELIVERY = (
    "INSERT INTO webhook_delivery_log (webhook_type, success, created_at)"
    " VALUES ('cleanup-test', :success, :at)"
)
ARCHIVE = (
    "INSERT INTO failed_job_archive (job_id, job_type, failure_reason, failure_category,"
    " reviewed, reviewed_at, created_at) VALUES (gen_random_uuid()::text, 'tasks.outbound',"
    " 'exhausted', :category, :reviewed, :reviewed_at, :at)"
)
METRIC = (
    "INSERT INTO system_health_metrics (metric_type, metric_name, metric_value, measured_at)"
    " VALUES ('performance', 'cleanup_test', 1, :at)"
)
HEALTH = (
    "INSERT INTO webhook_health_log (business_id, store_id, subscription_id, health_score,"
    " checked_at) VALUES (:business_id, :store_id, :subscription_id, 1, :at)"
)
ALERT = (
    "INSERT INTO alerts (rule, severity, status, dedup_key, message, raised_at, resolved_at)"
    " VALUES ('cleanup_test', 'info', :status, gen_random_uuid()::text, 'test', :at, :resolved)"
)


@pytest.fixture
def rows(engine: Engine, now: datetime) -> Rows:
    """Rows one second either side of every retention boundary (the boundary itself is kept)."""
    given = Rows()
    days = timedelta(days=1)
    with service_session(engine) as session:
        store = make_store(session, make_business(session))
        subscription_id = session.execute(
            text(
                "INSERT INTO webhook_subscriptions (business_id, store_id, provider, resource)"
                " VALUES (:b, :s, 'gmail', 'INBOX') RETURNING id"
            ),
            {"b": store.business_id, "s": store.id},
        ).scalar_one()
        conn = session.connection()
        for offset, past in ((SECOND, True), (timedelta(0), False), (-SECOND, False)):
            success_at, failed_at = now - 7 * days - offset, now - 30 * days - offset
            given.add(conn, "webhook_delivery_log", past, DELIVERY, success=True, at=success_at)
            given.add(conn, "webhook_delivery_log", past, DELIVERY, success=False, at=failed_at)
            given.add(
                conn, "failed_job_archive", past, ARCHIVE, category="delivery_exhausted",
                reviewed=True, reviewed_at=failed_at, at=failed_at - days,
            )  # fmt: skip
            given.add(conn, "system_health_metrics", past, METRIC, at=now - 90 * days - offset)
            given.add(
                conn, "webhook_health_log", past, HEALTH, business_id=store.business_id,
                store_id=store.id, subscription_id=subscription_id, at=failed_at,
            )  # fmt: skip
            given.add(
                conn, "alerts", past, ALERT, status="resolved",
                at=now - 100 * days, resolved=now - 90 * days - offset,
            )  # fmt: skip
        # Never deleted, however old: a failed delivery kept 30 days, an unreviewed or
        # non-delivery archive entry, an open alert, an alert resolved within retention.
        old = now - 365 * days
        given.add(conn, "webhook_delivery_log", False, DELIVERY, success=False, at=now - 8 * days)
        for category, reviewed in (("delivery_exhausted", False), ("authentication", True)):
            given.add(
                conn, "failed_job_archive", False, ARCHIVE, category=category,
                reviewed=reviewed, reviewed_at=old if reviewed else None, at=old,
            )  # fmt: skip
        given.add(
            conn, "failed_job_archive", False, ARCHIVE, category="delivery_exhausted",
            reviewed=True, reviewed_at=now - days, at=old,
        )  # fmt: skip
        given.add(conn, "alerts", False, ALERT, status="open", at=old, resolved=None)
        given.add(conn, "alerts", False, ALERT, status="resolved", at=old, resolved=now - days)
    return given


def _existing(engine: Engine, table: str, ids: set[uuid.UUID]) -> set[uuid.UUID]:
    with engine.connect() as conn:
        found = conn.execute(
            text(f"SELECT id FROM {table} WHERE id = ANY(:ids)"), {"ids": list(ids)}
        )
        return set(found.scalars())


def _audit(engine: Engine, run_id: uuid.UUID) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT * FROM cleanup_audit_log WHERE run_id = :run_id"), {"run_id": run_id}
        )
        return [dict(row._mapping) for row in found]


def test_a_dry_run_counts_what_would_go_and_deletes_nothing(
    engine: Engine, rows: Rows, now: datetime
) -> None:
    results = run_all_cleanup_tasks(dry_run=True, now=now)

    assert {r.table: r.rows_deleted for r in results} == {t: len(rows.past[t]) for t in TABLES}
    assert {r.outcome for r in results} == {CleanupOutcome.DRY_RUN}
    for table in TABLES:
        assert _existing(engine, table, rows.past[table] | rows.kept[table]) == (
            rows.past[table] | rows.kept[table]
        )


def test_exactly_the_rows_past_retention_are_deleted(
    engine: Engine, rows: Rows, now: datetime
) -> None:
    results = run_all_cleanup_tasks(now=now)

    assert {r.table: r.rows_deleted for r in results} == {t: len(rows.past[t]) for t in TABLES}
    assert {r.outcome for r in results} == {CleanupOutcome.SUCCESS}
    for table in TABLES:
        assert _existing(engine, table, rows.past[table] | rows.kept[table]) == rows.kept[table]


def test_every_run_writes_one_audit_row_per_table(
    engine: Engine, rows: Rows, now: datetime
) -> None:
    dry, real = run_all_cleanup_tasks(dry_run=True, now=now), run_all_cleanup_tasks(now=now)

    for results, outcome in ((dry, "dry_run"), (real, "success")):
        run_ids = {r.run_id for r in results}
        assert len(run_ids) == 1
        audit = _audit(engine, run_ids.pop())
        assert sorted(a["table_name"] for a in audit) == sorted(TABLES)
        assert {a["outcome"] for a in audit} == {outcome}
        assert {a["table_name"]: a["rows_deleted"] for a in audit} == {
            t: len(rows.past[t]) for t in TABLES
        }
        assert all(
            a["started_at"] <= a["finished_at"] and a["error_message"] is None for a in audit
        )


@pytest.fixture
def superuser(database_url: str) -> Iterator[Engine]:
    """The login user, a superuser: it grants and revokes the service role's privileges."""
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    yield admin
    admin.dispose()


def test_a_failing_table_is_recorded_and_the_others_are_cleaned(
    engine: Engine, superuser: Engine, rows: Rows, now: datetime
) -> None:
    role = get_settings().db_service_role
    # The rows past retention wait in the DEFAULT partition (no day partition that old exists).
    with superuser.connect() as conn:
        conn.execute(text(f"REVOKE DELETE ON webhook_health_log_default FROM {role}"))
    try:
        results = run_all_cleanup_tasks(now=now)
    finally:
        with superuser.connect() as conn:
            conn.execute(text(f"GRANT DELETE ON webhook_health_log_default TO {role}"))

    by_table = {r.table: r for r in results}
    failed = by_table.pop("webhook_health_log")
    assert failed.outcome is CleanupOutcome.FAILED and not failed.complete
    assert "permission denied" in (failed.error_message or "")
    assert {r.outcome for r in by_table.values()} == {CleanupOutcome.SUCCESS}
    assert _existing(engine, "webhook_health_log", rows.past["webhook_health_log"])
    assert not _existing(engine, "alerts", rows.past["alerts"])  # the run went on after it
    audit = {a["table_name"]: a for a in _audit(engine, failed.run_id)}
    assert audit["webhook_health_log"]["outcome"] == "failed"
    assert "permission denied" in audit["webhook_health_log"]["error_message"]


def test_a_large_delete_runs_in_short_batches_while_the_table_stays_usable(
    engine: Engine, now: datetime
) -> None:
    total, batch_size = 300_000, 7_000
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO webhook_delivery_log (webhook_type, success, created_at)"
                " SELECT 'cleanup-bulk', true, :at FROM generate_series(1, :n)"
            ),
            {"at": now - timedelta(days=10), "n": total},
        )
    settings = _settings(cleanup_batch_size=batch_size, cleanup_max_seconds_per_table=600.0)
    outcome: dict[str, Any] = {}
    cleaner = threading.Thread(
        target=lambda: outcome.update(
            result=cleanup_webhook_delivery_logs(now=now, settings=settings)
        )
    )

    reads = _read_while(engine, cleaner)

    result = outcome["result"]
    assert result.outcome is CleanupOutcome.SUCCESS and result.complete
    assert result.rows_deleted == total
    assert len(result.batch_ms) == math.ceil(total / batch_size)
    assert result.analyzed  # as the owner, through syncguard_analyze
    assert reads["count"] >= 1 and reads["written"] >= 1  # never blocked past lock_timeout
    print(  # the measured figures; speed is asserted nowhere (bench/ measures it)
        f"\n{len(result.batch_ms)} batches of {batch_size}: max {result.max_batch_ms:.1f} ms,"
        f" mean {sum(result.batch_ms) / len(result.batch_ms):.1f} ms, total {result.duration_ms} ms"
    )


def _read_while(engine: Engine, worker: threading.Thread) -> dict[str, int]:
    """Count and insert on a second connection (lock_timeout 200 ms) until ``worker`` ends."""
    done = {"count": 0, "written": 0}
    with engine.connect() as conn:
        conn.execute(text("SET lock_timeout = '200ms'"))
        conn.commit()
        worker.start()
        while worker.is_alive():
            conn.execute(text("SELECT count(*) FROM webhook_delivery_log")).scalar_one()
            conn.execute(
                text(
                    "INSERT INTO webhook_delivery_log (webhook_type, success)"
                    " VALUES ('cleanup-concurrent', true)"
                )
            )
            conn.commit()
            done["count"] += 1
            done["written"] += 1
        worker.join()
    return done


def test_a_run_out_of_budget_stops_and_the_next_run_goes_on(engine: Engine, now: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO system_health_metrics (metric_type, metric_name, metric_value,"
                " measured_at) SELECT 'usage', 'cleanup_budget', 1, :at FROM generate_series(1, 25)"
            ),
            {"at": now - timedelta(days=91)},
        )
    settings = _settings(cleanup_batch_size=10, cleanup_max_batches=2)

    first = run_all_cleanup_tasks(now=now, settings=settings)
    second = run_all_cleanup_tasks(now=now, settings=settings)

    metrics = [
        next(r for r in run if r.table == "system_health_metrics") for run in (first, second)
    ]
    assert [(r.rows_deleted, r.complete) for r in metrics] == [(20, False), (5, True)]


def test_the_budget_is_batches_and_seconds_per_table() -> None:
    settings = _settings(cleanup_max_batches=3, cleanup_max_seconds_per_table=10.0)

    assert within_budget(2, 9.9, settings)
    assert not within_budget(3, 0.0, settings)
    assert not within_budget(0, 10.0, settings)


def test_the_task_returns_a_summary_and_beat_runs_it_daily_on_maintenance(now: datetime) -> None:
    from tasks.maintenance import run_all_cleanup_tasks as task

    summary = task(dry_run=True)

    assert summary["dry_run"] is True and summary["failed"] == []
    assert set(summary["tables"]) == set(TABLES)
    assert {t["outcome"] for t in summary["tables"].values()} == {"dry_run"}
    entry = BEAT_SCHEDULE["maintenance.run_all_cleanup_tasks"]
    assert entry["task"] == task.name and entry["options"]["queue"] == "maintenance"
    assert (entry["schedule"].hour, entry["schedule"].minute) == ({3}, {30})
