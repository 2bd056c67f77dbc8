"""SafeguardedTask's lifecycle on real workers, real Redis and real PostgreSQL."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime

import pytest
from celery.result import AsyncResult
from sqlalchemy import Engine, create_engine, text

import models
from models import FailureCategory
from safeguards import ArchiveFilter, list_entries, record_circuit_breaker_result, replay
from safeguards.dead_letter.archive import ArchivedJob
from safeguards.rate_limit.limiter import get_rate_limiter
from safeguards.redis_state import get_redis, key
from syncguard.db import service_session
from tasks.replay import enqueue_archived
from tests import workload
from tests.factories import make_business, make_store
from tests.sync_support import eventually
from tests.worker import running_worker

#: Short enough that deferral tests finish in seconds; the horizon is a few deferrals long.
WORKER_ENV = {"SYNCGUARD_MAX_BACKOFF_S": "1", "SYNCGUARD_DEFER_HORIZON_S": "4"}


@pytest.fixture(scope="module", autouse=True)
def worker() -> Iterator[None]:
    with running_worker(include=("tests.workload",), concurrency=4, env=WORKER_ENV):
        yield


@pytest.fixture
def store_id(engine: Engine) -> str:
    with service_session(engine) as session:
        return str(make_store(session, make_business(session)).id)


@pytest.fixture
def marker() -> str:
    return uuid.uuid4().hex


def _archived(store_id: str) -> list[ArchivedJob]:
    return list_entries(ArchiveFilter(store_id=uuid.UUID(store_id)))


def test_transient_failures_end_as_one_replayable_archive_row(store_id: str, marker: str) -> None:
    get_redis().set(key("test-broken", marker), 1)
    result = workload.flaky.delay(store_id, marker)
    result.get(timeout=30, propagate=False)

    assert result.state == "FAILURE"
    assert workload.runs(marker) == 3  # the first run and max_retries=2 retries
    [entry] = _archived(store_id)
    assert entry.failure_category == FailureCategory.TRANSIENT_EXHAUSTED
    assert entry.retry_count == 2 and entry.job_id == result.id
    assert entry.task == "tests.workload.flaky"
    assert (entry.args, entry.kwargs) == ([store_id, marker], {})
    assert entry.options["queue"] == "sync"
    assert entry.error_context["exception_type"].endswith("TransientFailure")
    assert "503" in entry.failure_reason and "Traceback" in entry.error_context["traceback"]
    # The last attempt's start and length, not nulls
    started = datetime.fromisoformat(entry.error_context["started_at"])
    assert started <= entry.created_at and entry.error_context["duration_s"] >= 0

    get_redis().delete(key("test-broken", marker))
    replayed = replay(entry.id, enqueue=enqueue_archived, replayed_by="test")
    assert replayed.replayed and replayed.replay_task_id != result.id
    rerun = AsyncResult(replayed.replay_task_id).get(timeout=30)
    assert rerun == {"retries": 0, "deferrals": 0}
    assert workload.runs(marker) == 4


def test_a_permanent_failure_is_archived_without_retries(store_id: str, marker: str) -> None:
    result = workload.revoked.delay(store_id, marker)
    result.get(timeout=30, propagate=False)

    assert result.state == "FAILURE"
    assert workload.runs(marker) == 1
    [entry] = _archived(store_id)
    assert entry.failure_category == FailureCategory.AUTHENTICATION
    assert entry.retry_count == 0


def test_a_concurrency_limit_defers_jobs_without_spending_retries(
    engine: Engine, store_id: str, marker: str
) -> None:
    with service_session(engine) as session:
        limits = models.ProviderRateLimit(store_id=store_id, provider="gmail", concurrency_limit=1)
        session.add(limits)
    results = [workload.slow_call.delay(store_id, marker, 0.4) for _ in range(4)]
    reports = [r.get(timeout=60) for r in results]

    assert workload.runs(marker) == 4
    assert all(r["retries"] == 0 for r in reports)
    # Four jobs, one lease, four children: the jobs that started while another held the lease
    # waited their turn. Not necessarily three: a job the pool hands to the first job's child
    # after it finished starts with the lease free (that child gives it back with its next
    # admission), so it need not wait.
    assert sum(1 for r in reports if r["deferrals"] > 0) >= 2
    assert _archived(store_id) == []


def test_a_provider_throttle_defers_until_retry_after(store_id: str, marker: str) -> None:
    get_rate_limiter().throttle(store_id, 1.5)
    started = time.monotonic()
    report = workload.slow_call.delay(store_id, marker, 0).get(timeout=30)

    assert report["retries"] == 0 and report["deferrals"] >= 1
    assert time.monotonic() - started >= 1.4  # it really waited for the throttle to end


def test_a_circuit_open_past_the_horizon_is_archived_with_its_category(
    store_id: str, marker: str
) -> None:
    for _ in range(10):  # trip the store's gmail circuit (30 s open wait, horizon 4 s)
        record_circuit_breaker_result(uuid.UUID(store_id), "gmail", False, failure_reason="503")
    result = workload.slow_call.delay(store_id, marker, 0)
    result.get(timeout=30, propagate=False)

    assert result.state == "FAILURE" and workload.runs(marker) == 0
    [entry] = _archived(store_id)
    assert entry.failure_category == FailureCategory.CIRCUIT_OPEN_TOO_LONG


def test_an_archive_that_cannot_be_written_leaves_the_job_unacknowledged(
    database_url: str, store_id: str, marker: str
) -> None:
    admin = create_engine(database_url)  # connects as the login user, a superuser here
    with admin.begin() as conn:
        conn.execute(text("REVOKE INSERT ON failed_job_archive FROM syncguard_service"))
    try:
        workload.revoked.delay(store_id, marker)
        eventually(lambda: workload.runs(marker) >= 2)  # rejected, redelivered, ran again
        assert _archived(store_id) == []
    finally:
        with admin.begin() as conn:
            conn.execute(text("GRANT INSERT ON failed_job_archive TO syncguard_service"))
        admin.dispose()
    [entry] = eventually(lambda: _archived(store_id))
    assert entry.failure_category == FailureCategory.AUTHENTICATION


def test_every_run_leaves_a_duration_metric_with_its_outcome(
    engine: Engine, store_id: str, marker: str
) -> None:
    workload.slow_call.delay(store_id, marker, 0).get(timeout=30)

    def outcomes() -> list[str]:
        with engine.connect() as conn:
            return list(
                conn.execute(
                    text(
                        "SELECT tags->>'outcome' FROM system_health_metrics "
                        "WHERE store_id = :s AND metric_name = 'task_duration_ms'"
                    ),
                    {"s": store_id},
                ).scalars()
            )

    # The worker's flusher writes batches every couple of seconds, not per call.
    assert eventually(outcomes, timeout_s=15) == ["succeeded"]


def test_a_refused_job_is_deferred_before_its_body_runs(store_id: str, marker: str) -> None:
    get_rate_limiter().throttle(store_id, 1.0)
    report = workload.flaky.delay(store_id, marker).get(timeout=30)

    # flaky counts a run before its first provider call: deferred runs never got that far.
    assert report["deferrals"] >= 1 and workload.runs(marker) == 1


def test_beat_mirrors_rate_limit_usage_into_the_seed_table(engine: Engine, store_id: str) -> None:
    from tasks.maintenance import mirror_safeguard_state

    get_rate_limiter().hit(store_id, "messages.get")
    mirrored = mirror_safeguard_state.delay().get(timeout=30)

    assert mirrored["rate_limits"] >= 1
    with engine.connect() as conn:
        row = conn.execute(
            text(f"SELECT * FROM provider_rate_limits WHERE store_id = '{store_id}';")
        ).one()
    assert row.current_minute_usage == 20 and row.usage_synced_at is not None
