"""The guard's own cost, in process: ``guard()`` against a PING, the breaker against pybreaker.

- ``guard()`` latency: one ``guarded_call`` around a no-op (admission, the call, settlement)
  against one Redis ``PING`` on the same client: the floor of any Redis-backed safeguard.
- Circuit check + record pairs/s: ``CircuitBreaker.allow`` (brief) then the success recorded
  as the guard records it (``defer_success``: counted in the next ``allow``'s script run, so
  one round trip per pair; a trial's outcome would be recorded at once) against pybreaker's
  ``CircuitBreaker.call`` with ``CircuitRedisStorage`` on the same Redis (a GET of the state,
  a SET of its failure counter); both closed, every call succeeding, every outcome counted.
  Ours is exact under races (the half-open race in the notes); pybreaker's state is not.
Stores live only in Redis (no PostgreSQL lookups; the guard's store has no provider-app
credentials, so the app quota of issue 13 is not in play); limits admit every call.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pybreaker
import redis

from bench.half_open_race import half_open_race
from bench.harness import Benchmark, Pair
from models import Provider
from safeguards.circuit_breaker.breaker import CircuitBreaker
from safeguards.rate_limit import limiter as limiter_module
from safeguards.rate_limit.limits import LimitOverrides, RateLimits
from safeguards.redis_state import get_redis
from syncguard.services import ensure_services
from syncguard.settings import get_settings

BIG = 10**9


class _NoStoreOverrides:
    def provider(self, store_id: str) -> Provider:
        return Provider.GMAIL

    def overrides(self, store_id: str) -> LimitOverrides:
        return LimitOverrides()


def _per_call_s(call: Callable[[], object], n: int) -> float:
    for _ in range(min(100, n)):  # warm up: scripts loaded, connections open
        call()
    started = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - started) / n


def _client() -> redis.Redis:
    return get_redis(ensure_services(get_settings()).redis_url)


def _guard_setup(quick: bool) -> Pair:
    from tasks import provider_apps
    from tasks.guard import CallScope, guarded_call

    client = _client()
    # The process's limiter, with limits that admit everything and no database lookups.
    limiter_module._DEFAULT[:] = [
        limiter_module.RateLimiter(
            client,
            limits={p: RateLimits(BIG, BIG, BIG, 0) for p in Provider},
            stores=_NoStoreOverrides(),  # type: ignore[arg-type]
        )
    ]
    scope = CallScope(uuid.uuid4(), Provider.GMAIL, "bench")
    # A store without provider-app credentials, as the app-quota lookup would find it in
    # PostgreSQL (remembered in process for minutes): the app quota is not in play here.
    provider_apps._apps[scope.store_id] = (float("inf"), None)

    def one_guard() -> None:
        with guarded_call(scope, "messages.get"):
            pass

    calls = 300 if quick else 2_000
    return Pair(
        ours=lambda: _per_call_s(one_guard, calls) * 1000,
        peer=lambda: _per_call_s(client.ping, calls) * 1000,
        close=limiter_module._DEFAULT.clear,
    )


def _breaker_setup(quick: bool) -> Pair:
    client = _client()
    ours = CircuitBreaker(client, write_through=False)
    store, name = uuid.uuid4(), "bench"
    namespace = f"{get_settings().redis_prefix}bench-pybreaker-{uuid.uuid4().hex}"
    storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client, namespace=namespace)
    theirs = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30, state_storage=storage)

    def our_pair() -> None:
        decision = ours.allow(store, name, brief=True)
        if decision.trial_token is None:
            ours.defer_success(store, name)
        else:
            ours.record(store, name, True, trial_token=decision.trial_token)

    def their_pair() -> None:
        theirs.call(lambda: None)

    calls = 500 if quick else 3_000
    pair = Pair(
        ours=lambda: 1 / _per_call_s(our_pair, calls),
        peer=lambda: 1 / _per_call_s(their_pair, calls),
    )
    ours_admitted, theirs_admitted = half_open_race()
    pair.notes["half-open race, 8 processes, 3 trials permitted"] = (
        f"ours admitted {ours_admitted}, pybreaker {theirs_admitted}"
    )
    return pair


#: Issue 12 goals 1 and 3: guard() within 2x a PING; breaker pairs/s at least pybreaker's.
BENCHMARKS = [
    Benchmark(
        name="guard() latency",
        unit="ms",
        peer_name="redis PING",
        goal=2.0,
        setup=_guard_setup,
        lower_is_better=True,
    ),
    Benchmark(
        name="circuit check + record pairs",
        unit="pairs/s",
        peer_name="pybreaker CircuitRedisStorage",
        goal=1.0,
        setup=_breaker_setup,
    ),
]
