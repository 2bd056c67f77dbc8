"""Partitions of the history tables on the real server: made ahead (idempotent, rows waiting in
the DEFAULT partition moved in), and retention by whole days instead of row deletes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text

from beat_schedule import BEAT_SCHEDULE
from models import CleanupOutcome
from safeguards.cleanup import (
    RetentionPolicy,
    Rule,
    apply_policy,
    cleanup_old_health_metrics,
    cleanup_webhook_delivery_logs,
    cleanup_webhook_health_logs,
)
from safeguards.partitions import ensure_partitions
from syncguard.db import get_engine
from syncguard.migrate import upgrade
from syncguard.settings import get_settings
from tests.partitioning import make_tenant, scratch_database

SECOND = timedelta(seconds=1)
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def engine(server_url: str) -> Iterator[Engine]:
    """The service-role engine of a migrated database of this module's own."""
    with scratch_database(server_url) as url:
        upgrade(url)
        service = get_engine(url)
        yield service
        service.dispose()


@pytest.fixture
def now(engine: Engine) -> datetime:
    """The database's clock in UTC, the time zone of the partitions' days."""
    with engine.connect() as conn:
        current: datetime = conn.execute(text("SELECT now()")).scalar_one()
    return current.astimezone(UTC)


def _where(conn: Connection, table: str, ids: list[Any]) -> dict[Any, str]:
    found = conn.execute(
        text(f"SELECT id, tableoid::regclass::text FROM {table} WHERE id = ANY(:ids)"),
        {"ids": ids},
    )
    return {row[0]: row[1] for row in found}


def _exists(conn: Connection, name: str) -> bool:
    return bool(conn.execute(text("SELECT to_regclass(:n) IS NOT NULL"), {"n": name}).scalar())


def _insert(conn: Connection, sql: str, at: datetime, count: int = 1, **params: Any) -> list[Any]:
    statement = text(f"{sql} FROM generate_series(1, :count) RETURNING id")
    return list(conn.execute(statement, {"at": at, "count": count, **params}).scalars())


METRIC = (
    "INSERT INTO system_health_metrics (metric_type, metric_name, metric_value, measured_at)"
    " SELECT 'usage', 'retention', 1, :at"
)
DELIVERY = (
    "INSERT INTO webhook_delivery_log (webhook_type, success, created_at)"
    " SELECT 'retention', :success, :at"
)
HEALTH = (
    "INSERT INTO webhook_health_log (store_id, subscription_id, health_score, checked_at)"
    " SELECT :store, :sub, 1, :at"
)


def test_partitions_are_made_ahead_idempotently_and_take_in_waiting_rows(
    engine: Engine, now: datetime
) -> None:
    later = (now + 20 * DAY).replace(hour=12)
    with engine.begin() as conn:
        waiting = _insert(conn, METRIC, later, 3)
        assert set(_where(conn, "system_health_metrics", waiting).values()) == {
            "system_health_metrics_default"
        }  # no partition for that day yet: the insert still succeeds
        first = ensure_partitions(conn, later.date(), days_ahead=1)
        again = ensure_partitions(conn, later.date(), days_ahead=1)
        where = _where(conn, "system_health_metrics", waiting)
    assert {t: len(made) for t, made in first.items()} == {
        "system_health_metrics": 2, "webhook_delivery_log": 2, "webhook_health_log": 2,
    }  # fmt: skip
    assert again == {key: [] for key in first}
    assert set(where.values()) == {f"system_health_metrics_p{later:%Y%m%d}"}


@pytest.fixture
def aged(engine: Engine, now: datetime) -> dict[str, Any]:
    """History rows in expired, partly expired, straddling and live days, and in DEFAULT."""
    today = now.date()
    with engine.begin() as conn:
        _, store_id, subscription_id = make_tenant(conn, "Aged")
        for back in (40, 10, 3, 95, 35):
            ensure_partitions(conn, today - timedelta(days=back), days_ahead=0)
        metric_cutoff, health_cutoff = now - 90 * DAY, now - 30 * DAY
        ensure_partitions(conn, metric_cutoff.date(), days_ahead=0)
        ensure_partitions(conn, health_cutoff.date(), days_ahead=0)
        noon = {back: (now - back * DAY).replace(hour=12) for back in (40, 10, 3, 95, 35)}
        h = {"store": store_id, "sub": subscription_id}
        rows = {
            "d40": _insert(conn, DELIVERY, noon[40], 5, success=True)
            + _insert(conn, DELIVERY, noon[40], 4, success=False),
            "d10_ok": _insert(conn, DELIVERY, noon[10], 6, success=True),
            "d10_failed": _insert(conn, DELIVERY, noon[10], 3, success=False),
            "d3": _insert(conn, DELIVERY, noon[3], 2, success=True)
            + _insert(conn, DELIVERY, noon[3], 2, success=False),
            # No partition for these days: they wait in DEFAULT, cleaned row by row.
            "d_default_old": _insert(conn, DELIVERY, now - 8 * DAY, success=True),
            "d_default_new": _insert(conn, DELIVERY, now - 6 * DAY, success=True),
            "m95": _insert(conn, METRIC, noon[95], 7),
            # Past the cutoff by a second, in the day that straddles it: kept (< 1 day late).
            "m_straddling": _insert(conn, METRIC, metric_cutoff - SECOND),
            "h35": _insert(conn, HEALTH, noon[35], 3, **h),
            "h_default_old": _insert(conn, HEALTH, now - 31 * DAY, **h),
            "h_straddling": _insert(conn, HEALTH, health_cutoff - SECOND, **h),
        }
    return {"rows": rows, "today": today}


def _names(today: date, back: int, table: str) -> str:
    return f"{table}_p{today - timedelta(days=back):%Y%m%d}"


def _dropped(today: date, table: str, *backs: int) -> set[str]:
    return {_names(today, back, table) for back in backs}


def test_retention_drops_whole_days_and_deletes_only_in_default(
    engine: Engine, now: datetime, aged: dict[str, Any]
) -> None:
    rows, today = aged["rows"], aged["today"]
    d40, d10 = _names(today, 40, "webhook_delivery_log"), _names(today, 10, "webhook_delivery_log")
    dry = cleanup_webhook_delivery_logs(engine=engine, now=now, dry_run=True)
    with engine.connect() as conn:
        assert _exists(conn, d40) and len(_where(conn, "webhook_delivery_log", rows["d40"])) == 9

    deliveries = cleanup_webhook_delivery_logs(engine=engine, now=now)
    metrics = cleanup_old_health_metrics(engine=engine, now=now)
    health = cleanup_webhook_health_logs(engine=engine, now=now)

    # Every day wholly past the cutoff goes, empty or not (the fixture made days 95, 90, 40, 35,
    # 30, 10 and 3 back in every table); a leaf only when it held rows.
    expired_deliveries = _dropped(today, "webhook_delivery_log", 95, 90, 40, 35) | {f"{d10}_ok"}
    assert (dry.outcome, dry.rows_deleted, set(dry.partitions)) == (
        CleanupOutcome.DRY_RUN, 9 + 6 + 1, expired_deliveries,
    )  # fmt: skip
    assert (deliveries.outcome, deliveries.rows_deleted, set(deliveries.partitions)) == (
        CleanupOutcome.SUCCESS, 9 + 6 + 1, expired_deliveries,
    )  # fmt: skip
    assert (metrics.rows_deleted, set(metrics.partitions)) == (
        7, _dropped(today, "system_health_metrics", 95),
    )  # fmt: skip
    assert (health.rows_deleted, set(health.partitions)) == (
        3 + 1, _dropped(today, "webhook_health_log", 95, 90, 40, 35),
    )  # fmt: skip
    with engine.connect() as conn:
        assert not _exists(conn, d40) and _exists(conn, f"{d10}_ok")
        kept = {
            "webhook_delivery_log": rows["d10_failed"] + rows["d3"] + rows["d_default_new"],
            "system_health_metrics": rows["m_straddling"],
            "webhook_health_log": rows["h_straddling"],
        }
        gone = {
            "webhook_delivery_log": rows["d40"] + rows["d10_ok"] + rows["d_default_old"],
            "system_health_metrics": rows["m95"],
            "webhook_health_log": rows["h35"] + rows["h_default_old"],
        }
        for table in kept:
            assert set(_where(conn, table, kept[table])) == set(kept[table]), table
            assert _where(conn, table, gone[table]) == {}, table
        audit = conn.execute(
            text("SELECT rows_deleted FROM cleanup_audit_log WHERE run_id = :r"),
            {"r": deliveries.run_id},
        ).scalar_one()
        assert audit == 16
    # A second run finds nothing: the truncated leaf stays, empty, and is not listed again.
    assert cleanup_webhook_delivery_logs(engine=engine, now=now).partitions == ()


def test_a_drop_waits_at_most_the_lock_timeout_and_the_next_run_goes_on(
    engine: Engine, now: datetime
) -> None:
    old = now.date() - timedelta(days=200)
    with engine.begin() as conn:
        ensure_partitions(conn, old, days_ahead=0)
        _insert(conn, METRIC, datetime.combine(old, now.timetz()).replace(hour=12), 2)
    settings = get_settings().model_copy(update={"cleanup_lock_timeout_ms": 200})
    from safeguards.cleanup import HEALTH_METRICS

    with engine.connect() as reader:  # a long read holds the parent: DETACH must not queue
        reader.execute(text("SELECT count(*) FROM system_health_metrics")).scalar_one()
        blocked = apply_policy(HEALTH_METRICS, engine=engine, now=now, settings=settings)
        reader.rollback()
    after = apply_policy(HEALTH_METRICS, engine=engine, now=now, settings=settings)

    assert blocked.outcome is CleanupOutcome.FAILED and "lock timeout" in (
        blocked.error_message or ""
    )
    assert (after.outcome, after.rows_deleted) == (CleanupOutcome.SUCCESS, 2)


def test_the_task_makes_the_days_ahead_and_beat_runs_it_hourly_on_maintenance() -> None:
    from tasks.partitions import ensure_history_partitions as task

    created = task.apply().get(timeout=60)

    assert set(created) == {"system_health_metrics", "webhook_delivery_log", "webhook_health_log"}
    assert task.apply().get(timeout=60) == {key: [] for key in created}  # idempotent
    entry = BEAT_SCHEDULE["maintenance.ensure_history_partitions"]
    assert entry["task"] == task.name and entry["options"]["queue"] == "maintenance"
    assert entry["schedule"] == 3600.0


def test_a_row_policy_over_a_partitioned_table_deletes_exactly_its_rows(
    engine: Engine, now: datetime
) -> None:
    """A policy not marked partitioned deletes row by row in every leaf, and drops nothing."""
    days = [now.date() - timedelta(days=back) for back in (60, 61)]
    with engine.begin() as conn:
        ids: dict[str, list[Any]] = {"ctid-go": [], "ctid-stay": []}
        for day in days:
            ensure_partitions(conn, day, days_ahead=0)
            noon = datetime.combine(day, now.timetz()).replace(hour=12)
            for kind in ("ctid-go", "ctid-stay") if day == days[0] else ("ctid-stay", "ctid-go"):
                ids[kind] += _insert(
                    conn,
                    "INSERT INTO webhook_delivery_log (webhook_type, success, created_at)"
                    f" SELECT '{kind}', true, :at",
                    noon,
                    5,
                )
    policy = RetentionPolicy(
        "webhook_delivery_log",
        (Rule("webhook_type = 'ctid-go' AND created_at < :cutoff", lambda s: 1),),
    )

    result = apply_policy(policy, engine=engine, now=now)

    with engine.connect() as conn:
        assert _where(conn, "webhook_delivery_log", ids["ctid-go"]) == {}
        assert set(_where(conn, "webhook_delivery_log", ids["ctid-stay"])) == set(ids["ctid-stay"])
    assert (result.rows_deleted, result.partitions) == (10, ())
