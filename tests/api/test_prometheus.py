"""``GET /metrics``: parsed as Prometheus text; its counters move as real workers run tasks."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, text

from safeguards.health_metrics.prometheus import (
    COUNTERS,
    FLUSH_INTERVAL_S,
    TASK_DURATION,
    CounterStore,
    count_task,
    read_family,
)
from safeguards.health_metrics.recorder import METRICS
from safeguards.redis_state import get_redis
from syncguard.db import service_session
from tests import workload
from tests.factories import make_business, make_store
from tests.worker import running_worker

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: httpx.Client) -> Samples:
    """Every sample of ``/metrics``, keyed by (sample name, labels)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value, 0 when absent."""
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def worker() -> Iterator[None]:
    with running_worker(include=("tests.workload",), concurrency=2):
        yield


def test_metrics_parse_and_every_source_is_up(client: httpx.Client) -> None:
    samples = scrape(client)
    for source in ("redis", "broker", "postgres"):
        assert sample(samples, "syncguard_metrics_source_up", source=source) == 1.0
    assert ("syncguard_queue_depth", frozenset({("queue", "sync")})) in samples
    for gauge in ("circuits_open", "archive_backlog", "sync_jobs_running"):
        assert (f"syncguard_{gauge}", frozenset()) in samples


def test_counters_move_as_a_real_worker_runs_tasks(
    worker: None, client: httpx.Client, engine: Engine
) -> None:
    # Given a store and the counters as they are now
    with service_session(engine) as session:
        store_id = str(make_store(session, make_business(session)).id)
    task = {"task": "tests.workload.flaky"}
    before = scrape(client)
    # When a safeguarded task runs twice on a worker process
    for _ in range(2):
        workload.flaky.delay(store_id, uuid.uuid4().hex).get(timeout=30)
    # Then the shared counters moved by exactly that, once the worker's buffer is sent (its
    # flush thread sends within FLUSH_INTERVAL_S; the bound here is for a loaded machine)
    done = {**task, "outcome": "succeeded"}
    deadline = time.monotonic() + 30 * FLUSH_INTERVAL_S
    while True:
        after = scrape(client)
        moved = sample(after, "syncguard_tasks_total", **done) - sample(
            before, "syncguard_tasks_total", **done
        )
        if moved >= 2 or time.monotonic() > deadline:
            break
        time.sleep(FLUSH_INTERVAL_S / 4)
    assert moved == 2
    count = "syncguard_task_duration_seconds_count"
    assert sample(after, count, **task) - sample(before, count, **task) == 2
    assert sample(after, "syncguard_task_duration_seconds_bucket", le="+Inf", **task) == sample(
        after, count, **task
    )
    for safeguard in ("rate_limit", "circuit_breaker"):
        allowed = {"safeguard": safeguard, "decision": "allowed"}
        moved = sample(after, "syncguard_safeguard_decisions_total", **allowed) - sample(
            before, "syncguard_safeguard_decisions_total", **allowed
        )
        assert moved >= 2


def test_inbound_webhooks_are_counted_by_status_class_and_outcome(client: httpx.Client) -> None:
    labels = {"provider": "gmail", "kind": "gmail_push"}
    before = scrape(client)
    assert client.post("/webhooks/gmail", content=b"{not json").status_code == 401  # no token
    after = scrape(client)
    name = "syncguard_webhook_deliveries_total"
    refused = {"status_class": "4xx", "outcome": "refused", **labels}
    assert sample(after, name, **refused) - sample(before, name, **refused) == 1
    count = "syncguard_webhook_delivery_duration_seconds_count"
    assert sample(after, count, **labels) - sample(before, count, **labels) == 1


def test_histogram_buckets_are_cumulative() -> None:
    task = f"t-{uuid.uuid4().hex[:6]}"
    for seconds in (0.003, 0.2, 0.2, 7.0, 900.0):
        count_task(task, "succeeded", seconds)
    assert COUNTERS.flush()  # buffered in process until a flush
    family = read_family(TASK_DURATION, get_redis().hgetall(TASK_DURATION.redis_key()))
    mine = {
        s.labels["le"]: s.value
        for s in family.samples
        if s.labels.get("task") == task and s.name.endswith("_bucket")
    }
    assert (mine["0.01"], mine["0.25"], mine["10.0"], mine["300.0"], mine["+Inf"]) == (
        1,
        3,
        4,
        4,
        5,
    )


def test_an_unreachable_redis_never_fails_the_caller_and_is_counted(engine: Engine) -> None:
    import redis

    dead = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    store = CounterStore(lambda: dead)
    assert store.send(lambda pipe: pipe.hincrby("k", "f", 1)) is False
    assert store.send(lambda pipe: pipe.hincrby("k", "f", 1)) is False  # skipped: backing off
    assert store.lost == 1  # the first loss was reported at once, the skip waits
    METRICS.flush()
    with engine.connect() as conn:
        lost = conn.execute(
            text(
                "SELECT count(*) FROM system_health_metrics"
                " WHERE metric_name = 'prometheus_observations_lost'"
            )
        ).scalar_one()
    assert lost >= 1
