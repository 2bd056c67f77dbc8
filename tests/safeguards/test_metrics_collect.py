"""The Beat snapshot and the trend query, against the real PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from models import (
    Business,
    CircuitBreakerState,
    CircuitState,
    Direction,
    FailedJobArchive,
    FailureCategory,
    MetricType,
    Provider,
    Store,
    SubscriptionStatus,
    SyncJob,
    SyncJobStatus,
    SyncKind,
    SyncTrigger,
    WebhookDeliveryLog,
    WebhookHealthLog,
    WebhookSubscription,
)
from safeguards.health_metrics.collect import collect_metrics
from safeguards.health_metrics.trends import metric_trend, trend_statement
from syncguard.db import service_session
from tests.factories import make_business, make_store

#: The seed's per-business status query, verbatim but for the bound id.
SEED_STATUS_QUERY = text(
    "SELECT metric_type, metric_name, AVG(metric_value) as avg_value"
    " FROM system_health_metrics WHERE business_id = :id"
    " AND measured_at > NOW() - INTERVAL '1 hour' GROUP BY metric_type, metric_name"
)


def _archive(session: Session, store: Store, *, reviewed: bool = False) -> None:
    session.add(
        FailedJobArchive(
            store_id=store.id,
            business_id=store.business_id,
            job_id=uuid.uuid4().hex,
            job_type="tasks.sync.sync_store",
            failure_reason="TransientFailure: 503",
            failure_category=FailureCategory.TRANSIENT_EXHAUSTED,
            job_data={"task": "tasks.sync.sync_store"},
            error_context={},
            reviewed=reviewed,
        )
    )


def _delivery(session: Session, store: Store, success: bool, duration_ms: int) -> None:
    session.add(
        WebhookDeliveryLog(
            store_id=store.id,
            business_id=store.business_id,
            webhook_type="gmail_push",
            direction=Direction.INBOUND,
            success=success,
            response_code=204 if success else 400,
            duration_ms=duration_ms,
        )
    )


def _health(session: Session, store: Store, score: float) -> None:
    sub = WebhookSubscription(
        business_id=store.business_id,
        store_id=store.id,
        provider=store.provider,
        resource="INBOX",
        status=SubscriptionStatus.ACTIVE,
    )
    session.add(sub)
    session.flush()
    for old in (0.1, score):  # only the latest score counts
        session.add(
            WebhookHealthLog(
                business_id=store.business_id,
                store_id=store.id,
                subscription_id=sub.id,
                health_score=old,
                details={},
                checked_at=datetime.now(UTC) - timedelta(seconds=30 if old == 0.1 else 1),
            )
        )


def _status(engine: Engine, business: Business) -> dict[tuple[str, str], float]:
    with engine.connect() as conn:
        rows = conn.execute(SEED_STATUS_QUERY, {"id": business.id})
        return {(r.metric_type, r.metric_name): float(r.avg_value) for r in rows}


def test_the_snapshot_answers_the_seeds_status_query_per_business(engine: Engine) -> None:
    # Given two businesses: A with backlog, an open circuit, a running job and deliveries;
    # B with backlog and a live subscription whose latest health score is 0.8.
    with service_session(engine) as session:
        a, b = make_business(session, "Alpha"), make_business(session, "Beta")
        store_a, store_b = make_store(session, a), make_store(session, b, Provider.OUTLOOK)
        _archive(session, store_a)
        _archive(session, store_a)
        _archive(session, store_a, reviewed=True)
        _archive(session, store_b)
        session.add(
            CircuitBreakerState(
                business_id=a.id, store_id=store_a.id, circuit_name="gmail", state=CircuitState.OPEN
            )
        )
        session.add(
            SyncJob(
                business_id=a.id,
                store_id=store_a.id,
                kind=SyncKind.INCREMENTAL,
                trigger=SyncTrigger.WEBHOOK,
                status=SyncJobStatus.RUNNING,
                checkpoint={},
            )
        )
        for ok, ms in ((True, 10), (True, 20), (False, 300)):
            _delivery(session, store_a, ok, ms)
        _health(session, store_b, 0.8)

    # When Beat's collector runs
    written = collect_metrics({"sync": 3, "webhooks": 0, "maintenance": 1})

    # Then the seed's status query returns each business's own figures
    status_a, status_b = _status(engine, a), _status(engine, b)
    assert status_a[("errors", "archive_backlog")] == 2
    assert status_a[("safeguards", "circuits_open")] == 1
    assert status_a[("queue", "sync_jobs_running")] == 1
    assert status_a[("webhooks", "webhook_deliveries")] == 3
    assert abs(status_a[("webhooks", "webhook_success_rate")] - 2 / 3) < 1e-9
    assert status_a[("webhooks", "webhook_latency_p50_ms")] == 20
    assert abs(status_a[("webhooks", "webhook_latency_p95_ms")] - 272.0) < 1e-9
    assert status_b[("errors", "archive_backlog")] == 1
    assert status_b[("webhooks", "subscription_health_avg")] == 0.8
    # (no per-subscription gauge: webhook_health_log already holds each subscription's history)
    assert ("webhooks", "subscription_health_score") not in status_b
    assert ("safeguards", "circuits_open") not in status_b
    # ...and the system-wide rows (business_id NULL) cover both
    with engine.connect() as conn:
        totals = dict(
            conn.execute(
                text(
                    "SELECT DISTINCT ON (metric_name, tags) metric_name || coalesce("
                    " tags->>'queue', ''), metric_value FROM system_health_metrics"
                    " WHERE business_id IS NULL ORDER BY metric_name, tags, measured_at DESC"
                )
            ).all()
        )
    assert totals["queue_depthsync"] == 3 and totals["queue_depthmaintenance"] == 1
    assert totals["archive_backlog"] >= 3 and totals["circuits_open"] >= 1
    assert totals["webhook_deliveries"] >= 3
    assert written["queue"] >= 3 and written["errors"] >= 3


def test_a_gauge_that_drops_to_zero_gets_one_zero_row(engine: Engine) -> None:
    # Given a business whose backlog was reported as 1
    with service_session(engine) as session:
        business = make_business(session)
        _archive(session, make_store(session, business))
    collect_metrics({})
    # When its entry is reviewed and the collector runs again
    with service_session(engine) as session:
        session.execute(
            text("UPDATE failed_job_archive SET reviewed = true WHERE business_id = :b"),
            {"b": business.id},
        )
    collect_metrics({})
    # Then the latest backlog row of the business says 0
    with engine.connect() as conn:
        values = conn.execute(
            text(
                "SELECT metric_value FROM system_health_metrics WHERE business_id = :b"
                " AND metric_name = 'archive_backlog' ORDER BY measured_at"
            ),
            {"b": business.id},
        ).scalars()
        assert list(values) == [1.0, 0.0]


def _insert(engine: Engine, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO system_health_metrics (business_id, store_id, metric_type,"
                " metric_name, metric_value, tags, measured_at) VALUES (:business_id,"
                " :store_id, :metric_type, :name, :value, '{}', :at)"
            ),
            rows,
        )


def test_the_trend_buckets_by_minute_and_hour(engine: Engine) -> None:
    with service_session(engine) as session:
        business = make_business(session)
        store = make_store(session, business)
    t0 = datetime(2030, 1, 1, 10, 0, tzinfo=UTC)
    name = f"trend-{uuid.uuid4().hex[:6]}"
    points = [(0, 1.0), (20, 3.0), (59, 5.0), (60, 10.0), (3600 + 5, 7.0)]
    row = {"business_id": business.id, "store_id": store.id, "metric_type": "performance"}
    _insert(
        engine,
        [{**row, "name": name, "value": v, "at": t0 + timedelta(seconds=s)} for s, v in points],
    )
    system = {"business_id": None, "store_id": None, "metric_type": "queue", "name": name}
    _insert(engine, [{**system, "value": 42.0, "at": t0}])
    window = {"since": t0, "until": t0 + timedelta(hours=2)}

    by_minute = metric_trend(name, business_id=business.id, **window)
    assert [tuple(p)[1:] for p in by_minute] == [
        (3.0, 1.0, 5.0, 3),
        (10.0, 10.0, 10.0, 1),
        (7.0, 7.0, 7.0, 1),
    ]
    assert [p.bucket_start for p in by_minute] == [
        t0,
        t0 + timedelta(minutes=1),
        t0 + timedelta(hours=1),
    ]
    by_hour = metric_trend(name, store_id=store.id, bucket="hour", **window)
    assert [(p.bucket_start, p.max, p.samples) for p in by_hour] == [
        (t0, 10.0, 4),
        (t0 + timedelta(hours=1), 7.0, 1),
    ]
    assert [p.avg for p in metric_trend(name, **window)] == [42.0]  # system-wide rows only
    assert metric_trend(
        name, business_id=business.id, since=t0, until=t0 + timedelta(seconds=30)
    ) == [(t0, 2.0, 1.0, 3.0, 2)]


def _index_names(plan: Any) -> Iterator[str]:
    if isinstance(plan, dict):
        if "Index Name" in plan:
            yield plan["Index Name"]
        for value in plan.values():
            yield from _index_names(value)
    elif isinstance(plan, list):
        for item in plan:
            yield from _index_names(item)


def test_the_trend_query_is_served_by_an_index(engine: Engine) -> None:
    # Given 60,000 rows over 20 businesses and a week, analyzed
    businesses = []
    with service_session(engine) as session:
        businesses = [make_business(session).id for _ in range(20)]
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO system_health_metrics (business_id, metric_type, metric_name,"
                " metric_value, tags, measured_at)"
                " SELECT (CAST(:ids AS uuid[]))[1 + i % 20], 'performance', 'explain_me',"
                " i % 100, '{}', TIMESTAMPTZ '2031-01-01' + i * INTERVAL '10 seconds'"
                " FROM generate_series(1, 60000) i"
            ),
            {"ids": [str(b) for b in businesses]},
        )
        conn.execute(text("ANALYZE system_health_metrics"))
    since = datetime(2031, 1, 2, tzinfo=UTC)
    for business_id, store_id in ((businesses[3], None), (None, None), (None, uuid.uuid4())):
        sql, params = trend_statement(business_id, store_id)
        params |= {
            "width": timedelta(minutes=1),
            "types": [t.value for t in MetricType],
            "name": "explain_me",
            "since": since,
            "until": since + timedelta(hours=6),
        }
        with engine.connect() as conn:
            plan = conn.execute(text("EXPLAIN (FORMAT JSON) " + sql), params).scalar_one()
            plan = json.loads(plan) if isinstance(plan, str) else plan
            # The table is partitioned (0008): a partition's index names its parent's index.
            used = set(
                conn.execute(
                    text(
                        "SELECT pg_partition_root(CAST(i AS regclass))::text"
                        " FROM unnest(CAST(:names AS text[])) AS i"
                    ),
                    {"names": list(_index_names(plan))},
                ).scalars()
            )
        assert used & {
            "ix_system_health_metrics_business_id_measured_at",
            "ix_system_health_metrics_metric_name_measured_at",
            "ix_system_health_metrics_store_id_measured_at",
        }, f"{business_id=} {store_id=}: no index in {plan}"


def test_the_beat_task_reads_every_queue_from_the_real_broker() -> None:
    from tasks.maintenance import collect_metrics as beat_task

    written = beat_task.apply().get(timeout=30)
    assert written["queue"] >= 3  # one queue_depth row per queue, plus jobs in flight
