"""The distributed circuit breaker on real Redis and PostgreSQL, time moved by a ManualClock."""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, text

from models import CircuitState
from safeguards.circuit_breaker.breaker import (
    CircuitBreaker,
    add_listener,
    check_circuit_breaker,
    record_circuit_breaker_result,
    remove_listener,
)
from safeguards.circuit_breaker.states import CircuitBreakerConfig, SlidingWindowType
from safeguards.clock import ManualClock
from safeguards.errors import SafeguardUnavailable
from syncguard.db import service_session
from tests.factories import make_business, make_store

NAME = "gmail"
CONFIG = CircuitBreakerConfig(
    failure_rate_threshold=50.0,
    sliding_window_size=10,
    minimum_number_of_calls=6,
    consecutive_failure_threshold=3,
    wait_duration_in_open_state_s=10.0,
    open_wait_multiplier=2.0,
    max_wait_duration_in_open_state_s=35.0,
    open_wait_reset_after_s=60.0,
    permitted_number_of_calls_in_half_open_state=2,
    trial_reservation_timeout_s=20.0,
)
OPEN, HALF_OPEN, CLOSED = CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def breaker(redis_client: redis.Redis, clock: ManualClock) -> CircuitBreaker:
    """A breaker on random store ids: no PostgreSQL row to write."""
    return CircuitBreaker(redis_client, CONFIG, configs={}, clock=clock, write_through=False)


def _fail(breaker: CircuitBreaker, store_id: uuid.UUID, times: int) -> CircuitState:
    state = CLOSED
    for _ in range(times):
        state = breaker.record(store_id, NAME, False, failure_reason="timeout")
    return state


def _trip(breaker: CircuitBreaker, store_id: uuid.UUID) -> None:
    assert _fail(breaker, store_id, CONFIG.consecutive_failure_threshold or 1) is OPEN


def _half_open_trials(breaker: CircuitBreaker, store_id: uuid.UUID) -> list[str | None]:
    return [breaker.allow(store_id, NAME).trial_token for _ in range(2)]


def test_consecutive_failures_trip_the_circuit(breaker: CircuitBreaker) -> None:
    store_id = uuid.uuid4()
    assert _fail(breaker, store_id, 2) is CLOSED
    assert breaker.allow(store_id, NAME).allowed
    assert _fail(breaker, store_id, 1) is OPEN
    decision = breaker.allow(store_id, NAME)
    assert not decision.allowed
    assert decision.retry_after_s == pytest.approx(10.0)
    assert decision.trip_count == 1


def test_a_success_breaks_the_failure_streak(breaker: CircuitBreaker) -> None:
    store_id = uuid.uuid4()
    _fail(breaker, store_id, 2)
    breaker.record(store_id, NAME, True)
    assert _fail(breaker, store_id, 2) is CLOSED


def test_failure_rate_trips_only_after_minimum_number_of_calls(breaker: CircuitBreaker) -> None:
    store_id = uuid.uuid4()
    for success in (False, True, False, True, False):  # 60 % failed, but only 5 calls
        assert breaker.record(store_id, NAME, success) is CLOSED
    decision = breaker.allow(store_id, NAME)
    assert (decision.total_calls, decision.failure_count) == (5, 3)
    assert decision.failure_rate == pytest.approx(60.0)
    assert breaker.record(store_id, NAME, True) is OPEN  # the sixth call: 50 % of 6


def test_time_based_window_forgets_old_failures(
    redis_client: redis.Redis, clock: ManualClock
) -> None:
    config = CircuitBreakerConfig(
        sliding_window_type=SlidingWindowType.TIME_BASED,
        sliding_window_size=60,
        minimum_number_of_calls=4,
        consecutive_failure_threshold=None,
    )
    breaker = CircuitBreaker(redis_client, config, configs={}, clock=clock, write_through=False)
    store_id = uuid.uuid4()
    for success in (False, False, True):
        breaker.record(store_id, NAME, success)
    clock.advance(61)
    for success in (True, True, False):
        breaker.record(store_id, NAME, success)
    assert breaker.allow(store_id, NAME).total_calls == 3
    assert breaker.record(store_id, NAME, False) is OPEN  # 2 of 4 in the last minute


def test_open_circuit_half_opens_after_the_wait(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    store_id = uuid.uuid4()
    _trip(breaker, store_id)
    clock.advance(4)
    assert breaker.allow(store_id, NAME).retry_after_s == pytest.approx(6.0)
    clock.advance(6)
    first, second = breaker.allow(store_id, NAME), breaker.allow(store_id, NAME)
    assert (first.state, first.trial, second.trial) == (HALF_OPEN, True, True)
    third = breaker.allow(store_id, NAME)
    assert not third.allowed and third.state is HALF_OPEN and third.retry_after_s > 0


def test_trial_successes_close_the_circuit(breaker: CircuitBreaker, clock: ManualClock) -> None:
    store_id = uuid.uuid4()
    _trip(breaker, store_id)
    clock.advance(10)
    first, second = _half_open_trials(breaker, store_id)
    assert breaker.record(store_id, NAME, True, trial_token=first) is HALF_OPEN
    assert breaker.record(store_id, NAME, True, trial_token=second) is CLOSED
    decision = breaker.allow(store_id, NAME)
    assert decision.allowed and not decision.trial
    assert (decision.total_calls, decision.consecutive_failures) == (0, 0)


def test_a_trial_failure_reopens_with_a_longer_wait(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    store_id = uuid.uuid4()
    _trip(breaker, store_id)
    expected_waits = [20.0, 35.0, 35.0]  # 10 * 2^(k-1), capped at 35
    for wait in expected_waits:
        clock.advance(breaker.allow(store_id, NAME).retry_after_s)
        token, _ = _half_open_trials(breaker, store_id)
        assert breaker.record(store_id, NAME, False, trial_token=token) is OPEN
        assert breaker.allow(store_id, NAME).retry_after_s == pytest.approx(wait)
    assert breaker.stats(store_id, NAME).trip_count == 4


def test_wait_growth_restarts_after_a_healthy_spell(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    store_id = uuid.uuid4()

    def trip_and_recover() -> float:
        _trip(breaker, store_id)
        wait = breaker.allow(store_id, NAME).retry_after_s
        clock.advance(wait)
        for token in _half_open_trials(breaker, store_id):
            breaker.record(store_id, NAME, True, trial_token=token)
        return wait

    assert trip_and_recover() == pytest.approx(10.0)
    assert trip_and_recover() == pytest.approx(20.0)  # flapping: closed for no time at all
    clock.advance(CONFIG.open_wait_reset_after_s)
    assert trip_and_recover() == pytest.approx(10.0)


def test_ignored_outcomes_neither_count_nor_hold_a_trial(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    store_id = uuid.uuid4()
    for _ in range(10):
        assert breaker.record(store_id, NAME, None) is CLOSED
    assert breaker.allow(store_id, NAME).total_calls == 0
    _trip(breaker, store_id)
    clock.advance(10)
    first, _ = _half_open_trials(breaker, store_id)
    assert not breaker.allow(store_id, NAME).allowed
    assert breaker.record(store_id, NAME, None, trial_token=first) is HALF_OPEN
    assert breaker.allow(store_id, NAME).trial  # the released slot is free again


def test_outcome_without_token_settles_the_oldest_trial(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    store_id = uuid.uuid4()
    _trip(breaker, store_id)
    clock.advance(10)
    _half_open_trials(breaker, store_id)
    breaker.record(store_id, NAME, True)
    assert breaker.record(store_id, NAME, True) is CLOSED


def test_reset_closes_an_open_circuit(breaker: CircuitBreaker) -> None:
    store_id = uuid.uuid4()
    _trip(breaker, store_id)
    assert breaker.reset(store_id, NAME) is CLOSED
    assert breaker.allow(store_id, NAME).allowed


def _race(url: str, store_id: str, now: float, barrier: Any, results: Any) -> None:
    breaker = CircuitBreaker(
        redis.Redis.from_url(url), CONFIG, configs={}, clock=ManualClock(now), write_through=False
    )
    barrier.wait()
    results.put(breaker.allow(uuid.UUID(store_id), NAME).trial)


def test_racing_processes_get_exactly_the_permitted_trials(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    store_id = uuid.uuid4()
    _trip(breaker, store_id)
    clock.advance(10)  # the wait is over: the first caller half-opens the circuit
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(8), ctx.Queue()
    args = (os.environ["REDIS_URL"], str(store_id), clock.now(), barrier, results)
    workers = [ctx.Process(target=_race, args=args) for _ in range(8)]
    for worker in workers:
        worker.start()
    granted = [results.get(timeout=30) for _ in workers]
    for worker in workers:
        worker.join(timeout=10)
    assert sum(granted) == CONFIG.permitted_number_of_calls_in_half_open_state
    assert breaker.stats(store_id, NAME).half_open_calls == 2


def _reserve_and_hang(url: str, store_id: str, now: float, results: Any) -> None:
    breaker = CircuitBreaker(
        redis.Redis.from_url(url), CONFIG, configs={}, clock=ManualClock(now), write_through=False
    )
    results.put([breaker.allow(uuid.UUID(store_id), NAME).trial for _ in range(2)])
    time.sleep(60)


def test_a_killed_workers_trial_reservation_expires(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    store_id = uuid.uuid4()
    _trip(breaker, store_id)
    clock.advance(10)
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    args = (os.environ["REDIS_URL"], str(store_id), clock.now(), results)
    worker = ctx.Process(target=_reserve_and_hang, args=args)
    worker.start()
    assert results.get(timeout=30) == [True, True]
    worker.kill()
    worker.join(timeout=10)
    denied = breaker.allow(store_id, NAME)
    assert not denied.allowed and denied.retry_after_s == pytest.approx(10.0)
    clock.advance(CONFIG.trial_reservation_timeout_s)
    assert breaker.allow(store_id, NAME).trial


def _real_store(engine: Engine) -> tuple[uuid.UUID, uuid.UUID]:
    with service_session(engine) as session:
        business = make_business(session)
        store = make_store(session, business)
        return business.id, store.id


def _rows(engine: Engine, where: str, **params: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        query = text(f"SELECT * FROM circuit_breaker_state WHERE {where}")
        return [dict(row._mapping) for row in conn.execute(query, params)]


def test_a_trip_is_written_through_at_once(
    redis_client: redis.Redis, clock: ManualClock, engine: Engine
) -> None:
    business_id, store_id = _real_store(engine)
    breaker = CircuitBreaker(redis_client, CONFIG, configs={}, clock=clock, engine=engine)
    _trip(breaker, store_id)
    (row,) = _rows(engine, f"store_id = '{store_id}'")
    assert (row["state"], row["trip_count"], row["business_id"]) == ("open", 1, business_id)
    assert row["opened_at"].timestamp() == pytest.approx(clock.now())
    assert row["next_attempt_at"].timestamp() == pytest.approx(clock.now() + 10)
    assert (row["total_failures"], row["consecutive_failures"]) == (3, 3)
    clock.advance(10)
    for token in _half_open_trials(breaker, store_id):
        breaker.record(store_id, NAME, True, trial_token=token)
    (row,) = _rows(engine, f"store_id = '{store_id}'")
    assert (row["state"], row["next_attempt_at"], row["success_count"]) == ("closed", None, 2)


def test_business_wide_circuit_and_flush(
    redis_client: redis.Redis, clock: ManualClock, engine: Engine
) -> None:
    business_id, _ = _real_store(engine)
    breaker = CircuitBreaker(redis_client, CONFIG, configs={}, clock=clock, engine=engine)
    endpoint = f"webhook-endpoint-{uuid.uuid4().hex[:8]}"
    breaker.record(None, endpoint, True, business_id=business_id)
    breaker.record(None, endpoint, False, business_id=business_id)
    assert _rows(engine, "circuit_name = :name", name=endpoint) == []  # no transition yet
    assert breaker.flush_stats_to_postgres() >= 1
    (row,) = _rows(engine, "circuit_name = :name", name=endpoint)
    assert (row["store_id"], row["business_id"], row["state"]) == (None, business_id, "closed")
    assert (row["total_calls"], row["failure_count"], row["success_count"]) == (2, 1, 1)


def test_listeners_hear_transitions_and_a_raising_one_is_harmless(
    redis_client: redis.Redis, clock: ManualClock
) -> None:
    heard: list[tuple[Any, ...]] = []

    def broken(*_: Any) -> None:
        raise RuntimeError("alerting is down")

    def record(store_id: Any, name: str, old: Any, new: Any, stats: Any) -> None:
        heard.append((store_id, name, old, new, stats.trip_count))

    breaker = CircuitBreaker(
        redis_client, CONFIG, configs={}, clock=clock, write_through=False, listeners=[broken]
    )
    add_listener(record)
    try:
        store_id = uuid.uuid4()
        _trip(breaker, store_id)
        clock.advance(10)
        breaker.allow(store_id, NAME)
    finally:
        remove_listener(record)
    assert heard == [(store_id, NAME, CLOSED, OPEN, 1), (store_id, NAME, OPEN, HALF_OPEN, 1)]


def test_unreachable_redis_raises_safeguard_unavailable(clock: ManualClock) -> None:
    breaker = CircuitBreaker(redis.Redis.from_url("redis://127.0.0.1:1/0"), CONFIG, clock=clock)
    with pytest.raises(SafeguardUnavailable):
        breaker.allow(uuid.uuid4(), NAME)
    with pytest.raises(SafeguardUnavailable):
        breaker.record(uuid.uuid4(), NAME, False)


def test_seed_functions_use_the_shared_breaker(engine: Engine) -> None:
    _, store_id = _real_store(engine)
    decision = check_circuit_breaker(store_id, "outlook")
    assert decision.allowed and decision.as_dict()["state"] == "closed"
    assert record_circuit_breaker_result(store_id, "outlook", False) is CLOSED


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="success_threshold"):
        CircuitBreakerConfig(permitted_number_of_calls_in_half_open_state=2, success_threshold=3)
    assert CONFIG.open_wait_s(1) == 10.0 and CONFIG.open_wait_s(3) == 35.0
