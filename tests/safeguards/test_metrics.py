"""Batched metrics: buffered in process, written in one statement, kept while PostgreSQL is away."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import Engine, create_engine, insert, text
from sqlalchemy.exc import OperationalError

from models import MetricType, SystemHealthMetric
from safeguards.health_metrics.recorder import Metric, MetricsBuffer, write_metrics
from syncguard.db import service_session
from tests.factories import make_business, make_store


def _count(engine: Engine, name: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM system_health_metrics WHERE metric_name = :n"),
                {"n": name},
            ).scalar_one()
        )


def test_buffered_metrics_are_written_in_one_flush(engine: Engine) -> None:
    with service_session(engine) as session:
        store = make_store(session, make_business(session))
    name = f"m-{uuid.uuid4().hex[:6]}"
    buffer = MetricsBuffer(flush_interval_s=3600)
    for i in range(250):
        buffer.record(Metric(MetricType.PERFORMANCE, name, float(i), "ms", store_id=store.id))
    assert _count(engine, name) == 0
    assert buffer.flush() == 250
    assert _count(engine, name) == 250 and buffer.pending() == 0


def test_an_unreachable_database_keeps_the_batch_for_the_next_flush(engine: Engine) -> None:
    dead = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    reachable = {"yes": False}

    def writer(metrics: Sequence[Metric]) -> None:
        target = engine if reachable["yes"] else dead
        with target.begin() as conn:
            conn.execute(insert(SystemHealthMetric), [vars(m) for m in metrics])

    name = f"m-{uuid.uuid4().hex[:6]}"
    buffer = MetricsBuffer(writer, flush_interval_s=3600)
    buffer.record(Metric(MetricType.ERRORS, name, 1.0))
    assert buffer.flush() == 0 and buffer.pending() == 1
    reachable["yes"] = True
    assert buffer.flush() == 1
    assert _count(engine, name) == 1


def test_overflow_drops_the_oldest_and_counts_it() -> None:
    def failing(_: Sequence[Metric]) -> None:
        raise OperationalError("insert", {}, Exception("down"))

    buffer = MetricsBuffer(failing, flush_interval_s=3600, max_buffered=3)
    for i in range(5):
        buffer.record(Metric(MetricType.USAGE, "x", float(i)))
    assert buffer.pending() == 3 and buffer.dropped == 2


def test_default_writer_uses_the_service_role(engine: Engine) -> None:
    name = f"m-{uuid.uuid4().hex[:6]}"
    write_metrics([Metric(MetricType.QUEUE, name, 3.0, "tasks")])
    assert _count(engine, name) == 1


def test_a_metric_of_a_deleted_store_does_not_hold_the_batch_back(engine: Engine) -> None:
    with service_session(engine) as session:
        store = make_store(session, make_business(session))
    gone = uuid.uuid4()
    name = f"m-{uuid.uuid4().hex[:6]}"
    buffer = MetricsBuffer(flush_interval_s=3600)
    buffer.record(Metric(MetricType.PERFORMANCE, name, 1.0, "ms", store_id=gone))
    buffer.record(Metric(MetricType.PERFORMANCE, name, 2.0, "ms", store_id=store.id))

    assert buffer.flush() == 2 and buffer.pending() == 0

    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT metric_value, store_id, business_id, tags FROM system_health_metrics "
                "WHERE metric_name = :n ORDER BY metric_value"
            ),
            {"n": name},
        ).all()
    assert [(r.store_id, r.business_id, r.tags) for r in rows] == [
        (None, None, {"deleted_store_id": str(gone)}),
        (store.id, store.business_id, {}),
    ]
