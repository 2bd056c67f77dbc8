"""Deferred outcomes: a guarded call's success rides with the next admission, and still lands.

Real Redis; the guard runs against a limiter with the given limits and no database lookups.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from models import CircuitState, Provider
from safeguards.circuit_breaker.breaker import CircuitBreaker
from safeguards.circuit_breaker.states import CircuitBreakerConfig
from safeguards.clock import ManualClock
from safeguards.deferred import DEFERRED
from safeguards.errors import TransientFailure
from safeguards.rate_limit import limiter as limiter_module
from safeguards.rate_limit.limiter import RateLimiter
from safeguards.rate_limit.limits import LimitOverrides, RateLimits
from tasks.guard import CallScope, guarded_call

GMAIL = Provider.GMAIL


class _NoDatabase:
    def provider(self, store_id: str) -> Provider:
        return GMAIL

    def overrides(self, store_id: str) -> LimitOverrides:
        return _NONE


_NONE = LimitOverrides()


@pytest.fixture
def limiter(redis_client: redis.Redis) -> Iterator[RateLimiter]:
    """The process's limiter for the guard: one lease slot, room in every window."""
    made = RateLimiter(
        redis_client,
        limits={p: RateLimits(1000, 10_000, 100_000, 1) for p in Provider},
        stores=_NoDatabase(),  # type: ignore[arg-type]
    )
    saved = list(limiter_module._DEFAULT)
    limiter_module._DEFAULT[:] = [made]
    yield made
    DEFERRED.flush()
    limiter_module._DEFAULT[:] = saved


def test_a_deferred_success_gives_its_lease_back_to_the_next_call(limiter: RateLimiter) -> None:
    # Given one lease slot and a guarded call that succeeded (its outcome deferred)
    scope = CallScope(uuid.uuid4(), GMAIL, "gmail")
    with guarded_call(scope, "messages.get"):
        pass
    # When the next call of the scope is admitted, then the first one's lease was given back
    # in the same script run (otherwise the one slot would refuse it for concurrency)
    for _ in range(3):
        with guarded_call(scope, "messages.get"):
            pass
    # And once sent, every success is counted in both safeguards and no lease is left
    DEFERRED.flush()
    usage = limiter.usage(str(scope.store_id), provider=GMAIL)
    assert (usage.success_count, usage.leases_in_use) == (4, 0)
    stats = CircuitBreaker(limiter.client).stats(scope.store_id, "gmail")
    assert (stats.success_count, stats.total_calls, stats.state) == (4, 4, CircuitState.CLOSED)


def test_a_lone_deferred_success_is_sent_in_the_background(limiter: RateLimiter) -> None:
    # Given a single guarded call and no further call of its scope
    scope = CallScope(uuid.uuid4(), GMAIL, "gmail")
    with guarded_call(scope, "messages.get"):
        pass
    # Then the background sender delivers its outcome on its own (polled, not timed)
    deadline = time.monotonic() + 30
    while True:
        usage = limiter.usage(str(scope.store_id), provider=GMAIL)
        if (usage.success_count, usage.leases_in_use) == (1, 0):
            break
        assert time.monotonic() < deadline, f"never sent: {usage}"
        time.sleep(0.05)
    assert CircuitBreaker(limiter.client).stats(scope.store_id, "gmail").success_count == 1


def test_a_failure_is_settled_at_once_with_the_deferred_successes(limiter: RateLimiter) -> None:
    scope = CallScope(uuid.uuid4(), GMAIL, "gmail")
    with guarded_call(scope, "messages.get"):
        pass
    with pytest.raises(TransientFailure), guarded_call(scope, "messages.get"):
        raise TimeoutError("provider timed out")
    # No flush: the failure's own round trip carried the earlier success along
    stats = CircuitBreaker(limiter.client).stats(scope.store_id, "gmail")
    assert (stats.success_count, stats.total_failures, stats.consecutive_failures) == (1, 1, 1)
    assert limiter.usage(str(scope.store_id), provider=GMAIL).leases_in_use == 0


def test_a_deferred_success_never_settles_a_half_open_trial(redis_client: redis.Redis) -> None:
    # Given a success deferred while closed, then the circuit tripped by other calls
    config = CircuitBreakerConfig(
        consecutive_failure_threshold=2,
        wait_duration_in_open_state_s=10.0,
        max_wait_duration_in_open_state_s=10.0,
        permitted_number_of_calls_in_half_open_state=1,
    )
    clock, store = ManualClock(), uuid.uuid4()
    breaker = CircuitBreaker(redis_client, config, configs={}, clock=clock, write_through=False)
    assert breaker.allow(store, "gmail", brief=True).allowed
    breaker.defer_success(store, "gmail")
    for _ in range(2):
        breaker.record(store, "gmail", False, failure_reason="timeout")
    # When the open wait ends and the next allow carries the deferred success
    clock.advance(10)
    decision = breaker.allow(store, "gmail")
    # Then the success is counted, but the trial is this call's and the circuit stays half-open
    assert decision.allowed and decision.trial and decision.state is CircuitState.HALF_OPEN
    stats = breaker.stats(store, "gmail")
    assert (stats.success_count, stats.state) == (1, CircuitState.HALF_OPEN)
    # And the trial's own success closes it
    breaker.record(store, "gmail", True, trial_token=decision.trial_token)
    assert breaker.stats(store, "gmail").state is CircuitState.CLOSED
