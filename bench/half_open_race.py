"""The half-open race: 8 processes ask a circuit whose open wait just ended, all at once.

Ours (permitted 3 trials) must admit exactly 3; pybreaker with ``CircuitRedisStorage`` lets
each process move the shared state to half-open on its own and run its call. A figure for the
notes of the breaker benchmark, not a ratio.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
import uuid
from typing import Any

import pybreaker

from safeguards.circuit_breaker.breaker import CircuitBreaker
from safeguards.circuit_breaker.states import CircuitBreakerConfig
from safeguards.redis_state import get_redis

RACERS = 8
TRIALS = 3
WAIT_S = 0.3


def _ours_racer(store: uuid.UUID, barrier: Any, admitted: Any) -> None:
    breaker = CircuitBreaker(get_redis(), _config(), write_through=False)
    barrier.wait()
    if breaker.allow(store, "race").allowed:
        with admitted.get_lock():
            admitted.value += 1


def _theirs_racer(namespace: str, barrier: Any, admitted: Any) -> None:
    breaker = _pybreaker(namespace)
    barrier.wait()

    def call() -> None:
        with admitted.get_lock():
            admitted.value += 1
        time.sleep(0.2)  # the trial call is still running when the others ask

    with contextlib.suppress(pybreaker.CircuitBreakerError):
        breaker.call(call)


def _config() -> CircuitBreakerConfig:
    return CircuitBreakerConfig(
        consecutive_failure_threshold=1,
        wait_duration_in_open_state_s=WAIT_S,
        max_wait_duration_in_open_state_s=WAIT_S,
        permitted_number_of_calls_in_half_open_state=TRIALS,
    )


def _pybreaker(namespace: str) -> pybreaker.CircuitBreaker:
    storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, get_redis(), namespace)
    return pybreaker.CircuitBreaker(fail_max=1, reset_timeout=WAIT_S, state_storage=storage)


def _race(target: Any, first: Any) -> int:
    ctx = multiprocessing.get_context("fork")
    barrier, admitted = ctx.Barrier(RACERS), ctx.Value("i", 0)
    procs = [ctx.Process(target=target, args=(first, barrier, admitted)) for _ in range(RACERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    return int(admitted.value)


def half_open_race() -> tuple[int, int]:
    """Trials admitted (ours, pybreaker's) when 8 processes race one just-reopened circuit."""
    store = uuid.uuid4()
    CircuitBreaker(get_redis(), _config(), write_through=False).record(store, "race", False)
    namespace = f"bench-race-{uuid.uuid4().hex}"
    theirs = _pybreaker(namespace)
    with contextlib.suppress(ZeroDivisionError, pybreaker.CircuitBreakerError):
        theirs.call(lambda: 1 / 0)
    time.sleep(WAIT_S + 0.1)
    return _race(_ours_racer, store), _race(_theirs_racer, namespace)
