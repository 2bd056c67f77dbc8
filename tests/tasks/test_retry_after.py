"""A provider's Retry-After is honoured on every status, on a real worker against the emulator.

What is asserted is what the worker computed and published, never elapsed time: the retry's
ETA as the worker holds it (``inspect().scheduled()``), the throttle the limiter keeps in
Redis, and the circuit's counters.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from celery.result import AsyncResult
from sqlalchemy import Engine

from models import Provider, SyncJobStatus
from providers.emulator.runner import EmulatorHandle, running_emulator
from safeguards.circuit_breaker.breaker import circuit_stats
from safeguards.errors import RateLimited
from safeguards.rate_limit.limiter import check_rate_limit, get_rate_limiter
from safeguards.redis_state import get_redis, key
from tasks import app
from tasks.guard import CallScope, preflight
from tasks.sync.requests import request_sync
from tests.sync_support import (
    connect_store,
    emulator_env,
    eventually,
    local_copy,
    mailbox_copy,
    wait_for_job,
)
from tests.worker import running_worker

#: The worker's longest countdown, seconds: above every Retry-After used here, so none is cut.
MAX_BACKOFF_S = 60


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


@pytest.fixture(scope="module", autouse=True)
def worker(emulator: EmulatorHandle) -> Iterator[None]:
    env = {**emulator_env(emulator), "SYNCGUARD_MAX_BACKOFF_S": str(MAX_BACKOFF_S)}
    with running_worker(concurrency=2, env=env):
        yield


def _scheduled_eta(store_id: uuid.UUID) -> float | None:
    """The ETA (epoch seconds) of the store's sync as the worker holds it, if one is waiting."""
    for entries in (app.control.inspect(timeout=1.0).scheduled() or {}).values():
        for entry in entries:
            if str(store_id) in str(entry["request"].get("args")):
                return datetime.fromisoformat(entry["eta"]).timestamp()
    return None


def _throttled_until(store_id: uuid.UUID, provider: Provider) -> float | None:
    return get_rate_limiter().usage(str(store_id), provider=provider).throttled_until


def _throttles(store_id: uuid.UUID, provider: Provider) -> int:
    """How often the store's limiter was throttled (the limiter's own counter in Redis)."""
    raw = get_redis().hget(key("ratelimit", str(store_id), provider.value, "stats"), "throttles")
    return int(raw or 0)


def _final_retries(engine: Engine, job_id: uuid.UUID) -> int:
    job = wait_for_job(engine, job_id, timeout_s=90)
    assert job.status is SyncJobStatus.SUCCEEDED, job.error_message
    return int(AsyncResult(job.celery_task_id).get(timeout=30)["retries"])


def test_graph_delta_503_with_retry_after_20_waits_20s_for_every_job_of_the_store(
    engine: Engine, emulator: EmulatorHandle
) -> None:
    # Given a Graph mailbox whose next delta answers 503 with Retry-After: 20, then recovers
    store_id, mailbox = connect_store(engine, emulator, Provider.OUTLOOK)
    mailbox.add("order 1")
    mailbox.faults(server_error={"status": 503, "retry_after": 20})
    before = time.time()

    # When a sync runs into it
    job_id = request_sync(store_id)
    assert job_id is not None
    eta = eventually(lambda: _scheduled_eta(store_id), 30)

    # Then the limiter blocks the store for 20 s from the failure, and the retry waits as long
    until = _throttled_until(store_id, Provider.OUTLOOK)
    assert until is not None and until >= before + 20
    assert eta >= until
    # ...so any other job of the store is deferred meanwhile, without calling Graph
    with pytest.raises(RateLimited) as refused:
        preflight(CallScope(store_id, Provider.OUTLOOK, "outlook"))
    assert 0 < refused.value.retry_after_s <= 20
    decision = check_rate_limit(store_id, "delta", provider=Provider.OUTLOOK, consume=False)
    assert (decision.allowed, decision.reason) == (False, "throttled")
    # ...and the 503 is still a failure of the provider for the circuit breaker
    circuit = circuit_stats(store_id, "outlook")
    assert circuit.total_failures == 1 and "503" in (circuit.last_failure_reason or "")

    # And once the wait is over the job recovers, having spent one retry and one 503
    assert _final_retries(engine, job_id) == 1
    assert local_copy(engine, store_id) == mailbox_copy(mailbox, Provider.OUTLOOK)
    delta = mailbox.stats()["responses"]["graph.messages.delta"]
    assert delta.get("503") == 1 and set(delta) == {"200", "503"}


def test_gmail_503_with_an_http_date_retry_after_is_honoured(
    engine: Engine, emulator: EmulatorHandle
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
    mailbox.add("order 1")
    before = time.time()
    not_before = datetime.fromtimestamp(int(before) + 8, tz=UTC)
    mailbox.faults(server_error={"status": 503, "retry_after": format_datetime(not_before, True)})

    job_id = request_sync(store_id)
    assert job_id is not None
    eta = eventually(lambda: _scheduled_eta(store_id), 30)

    until = _throttled_until(store_id, Provider.GMAIL)
    assert until is not None and until == pytest.approx(not_before.timestamp(), abs=0.5)
    assert eta >= until
    assert _final_retries(engine, job_id) == 1
    assert circuit_stats(store_id, "gmail").total_failures == 1


@pytest.mark.parametrize(
    ("provider", "status", "header"),
    [(Provider.GMAIL, 500, None), (Provider.OUTLOOK, 503, "soon"), (Provider.GMAIL, 503, "-1")],
)
def test_a_5xx_without_a_usable_retry_after_uses_the_normal_backoff(
    engine: Engine,
    emulator: EmulatorHandle,
    provider: Provider,
    status: int,
    header: str | None,
) -> None:
    store_id, mailbox = connect_store(engine, emulator, provider)
    mailbox.add("order 1")
    mailbox.faults(server_error={"status": status, "retry_after": header})

    job_id = request_sync(store_id)
    assert job_id is not None

    assert _final_retries(engine, job_id) == 1  # retried with backoff, once
    assert _throttles(store_id, provider) == 0  # nothing to share: other jobs were not held
    assert circuit_stats(store_id, provider.value).total_failures == 1
    assert local_copy(engine, store_id) == mailbox_copy(mailbox, provider)


def test_gmail_quota_403_with_retry_after_defers_for_at_least_that_long(
    engine: Engine, emulator: EmulatorHandle
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
    mailbox.add("order 1")
    mailbox.faults(quota_403={"reason": "rateLimitExceeded", "retry_after": 6})
    before = time.time()

    job_id = request_sync(store_id)
    assert job_id is not None
    eta = eventually(lambda: _scheduled_eta(store_id), 30)

    until = _throttled_until(store_id, Provider.GMAIL)
    assert until is not None and until >= before + 6
    assert eta >= until
    assert _final_retries(engine, job_id) == 0  # a throttle is deferred, no retry spent
    job = wait_for_job(engine, job_id)
    assert job.deferrals == 1
    # A throttle is the provider's flow control, not its ill health.
    assert circuit_stats(store_id, "gmail").total_failures == 0


@pytest.mark.parametrize("provider", [Provider.GMAIL, Provider.OUTLOOK])
def test_token_endpoint_503_with_retry_after_is_honoured(
    engine: Engine, emulator: EmulatorHandle, provider: Provider
) -> None:
    store_id, mailbox = connect_store(engine, emulator, provider)
    mailbox.add("order 1")
    mailbox.faults(token_error={"status": 503, "retry_after": 6})
    before = time.time()

    job_id = request_sync(store_id)
    assert job_id is not None
    eta = eventually(lambda: _scheduled_eta(store_id), 30)

    until = _throttled_until(store_id, provider)
    assert until is not None and until >= before + 6
    assert eta >= until
    assert _final_retries(engine, job_id) == 1
    assert circuit_stats(store_id, provider.value).total_failures == 1
    assert mailbox.stats()["requests"]["oauth.token"] == 2
