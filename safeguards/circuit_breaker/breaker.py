"""Distributed circuit breaker per (store, circuit name): state in Redis, written through to SQL.

Every decision (``allow``, ``record``, ``reset``) is one run of ``circuit_breaker.lua``, so all
workers on all hosts share one state machine.  Transitions are written to ``circuit_breaker_state``
at once and announced to listeners in the process that caused them.
"""

from __future__ import annotations

import atexit
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any, cast

import redis
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from models.enums import CircuitState
from safeguards.circuit_breaker.dirty import MARKS, backstop_scan, dirty_key, parse_member
from safeguards.circuit_breaker.persistence import upsert_circuit_row, upsert_circuit_rows
from safeguards.circuit_breaker.states import (
    DEFAULT_CONFIG,
    CircuitBreakerConfig,
    CircuitDecision,
    CircuitId,
    CircuitStats,
    ScriptReply,
    parse_reply,
)
from safeguards.clock import SYSTEM_CLOCK, Clock
from safeguards.deferred import DeferredOutcomes, Pending
from safeguards.hot_script import evalsha
from safeguards.redis_state import LuaScript, get_redis, key, run_script_batch
from safeguards.storable import storable_text
from syncguard.settings import get_settings

logger = logging.getLogger(__name__)

#: Seconds an untouched circuit's Redis keys live; the PostgreSQL row keeps its history.
STATE_TTL_S = 7 * 24 * 3600
#: Operations that may change a circuit's hash, so mark it for the mirror.
_CHANGING = frozenset({"allow", "success", "failure", "ignored", "reset", "settle"})
#: Circuits one mirror round trip and one upsert statement carry (the budget is checked after each).
FLUSH_CHUNK = 1_000
#: Seconds one mirror run may spend before leaving the rest to the next run (period 5 s).
FLUSH_BUDGET_S = 1.0
#: Circuit keys the backstop scan looks at per mirror run.
BACKSTOP_KEYS = 2_000
#: Redis key kind of the state hash (the sliding window and trials use derived kinds).
KEY_KIND = "circuit"
#: The state machine; also included (as a Lua function) by ``safeguards.admission``'s scripts.
SCRIPT = LuaScript("safeguards.circuit_breaker", "circuit_breaker")

#: Called as (store_id, circuit_name, old_state, new_state, stats) on every transition.
Listener = Callable[[uuid.UUID | None, str, CircuitState, CircuitState, CircuitStats], None]

#: Per-circuit-name configuration; names not listed use ``DEFAULT_CONFIG``.
CIRCUIT_CONFIGS: dict[str, CircuitBreakerConfig] = {}
_LISTENERS: list[Listener] = []
#: Successes recorded with ``defer_success``, counted with the circuit's next ``allow``.
_DEFERRED: DeferredOutcomes[CircuitId] = DeferredOutcomes()
atexit.register(_DEFERRED.flush)


def configure_circuit(circuit_name: str, config: CircuitBreakerConfig) -> None:
    """Use ``config`` for every circuit called ``circuit_name`` (in this process)."""
    CIRCUIT_CONFIGS[circuit_name] = config


def add_listener(listener: Listener) -> None:
    """Announce every transition caused in this process to ``listener``."""
    _LISTENERS.append(listener)


def remove_listener(listener: Listener) -> None:
    """Stop announcing transitions to ``listener``."""
    _LISTENERS.remove(listener)


@lru_cache(maxsize=64)
def _encoded_args(config: CircuitBreakerConfig) -> tuple[bytes, ...]:
    """The configuration's script arguments and the TTL, encoded once (as redis-py would)."""
    return tuple(
        repr(a).encode() if not isinstance(a, str) else a.encode()
        for a in [*config.script_args(), STATE_TTL_S]
    )


def _static(
    circuit: CircuitId, config: CircuitBreakerConfig
) -> tuple[list[str], tuple[bytes, ...], tuple[str, str, str]]:
    """A circuit's KEYS, encoded configuration and identity ARGV, computed once per circuit
    (keyed by the Redis prefix too, which ``_keys`` reads, so a changed one is never stale)."""
    return _prefixed_static(get_settings().redis_prefix, circuit, config)


@lru_cache(maxsize=4096)
def _prefixed_static(
    prefix: str, circuit: CircuitId, config: CircuitBreakerConfig
) -> tuple[list[str], tuple[bytes, ...], tuple[str, str, str]]:
    identity = (str(circuit.store_id or ""), str(circuit.business_id or ""), circuit.circuit_name)
    return _keys(circuit, config), _encoded_args(config), identity


def _keys(circuit: CircuitId, config: CircuitBreakerConfig) -> list[str]:
    scope, name = circuit.scope, circuit.circuit_name
    window = config.sliding_window_type.value
    # Distinct kinds, not suffixes, so a SCAN of "circuit:*" finds only the state hashes.
    return [
        key(KEY_KIND, scope, name),
        key(f"{KEY_KIND}-window", scope, name, window),
        key(f"{KEY_KIND}-window-failures", scope, name),
        key(f"{KEY_KIND}-trials", scope, name),
    ]


class CircuitBreaker:
    """The breaker's operations over one Redis client, configuration registry and clock."""

    def __init__(
        self,
        client: redis.Redis,
        config: CircuitBreakerConfig = DEFAULT_CONFIG,
        *,
        configs: Mapping[str, CircuitBreakerConfig] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        engine: Engine | None = None,
        write_through: bool = True,
        listeners: Iterable[Listener] = (),
    ) -> None:
        self.client = client
        self.config = config
        self.configs = CIRCUIT_CONFIGS if configs is None else configs
        self.clock = clock
        self.engine = engine
        self.write_through = write_through
        self.listeners = list(listeners)

    def config_for(self, circuit_name: str) -> CircuitBreakerConfig:
        """The configuration of circuits called ``circuit_name``."""
        return self.configs.get(circuit_name, self.config)

    def allow(
        self,
        store_id: uuid.UUID | None,
        circuit_name: str,
        *,
        business_id: uuid.UUID | None = None,
        brief: bool = False,
    ) -> CircuitDecision:
        """May a call go ahead now? Reserves a trial slot when the circuit is half-open.

        ``brief`` skips reading the counters back (the decision's counters read 0) unless the
        state changed: the hot path needs only allowed, state, retry-after and the trial.
        """
        circuit = CircuitId(store_id, circuit_name, business_id)
        pending = _DEFERRED.take(circuit)  # successes from defer_success ride along
        try:
            reply = self._run(
                circuit, "allow", brief=brief, settled=pending.successes if pending else 0
            )
        except BaseException:
            if pending:
                _DEFERRED.give_back(circuit, pending)
            raise
        return reply.decision

    def record(
        self,
        store_id: uuid.UUID | None,
        circuit_name: str,
        success: bool | None,
        *,
        failure_reason: str | None = None,
        trial_token: str | None = None,
        business_id: uuid.UUID | None = None,
    ) -> CircuitState:
        """Record an outcome: True success, False transient failure, None ignored (throttled...)."""
        op = "ignored" if success is None else "success" if success else "failure"
        circuit = CircuitId(store_id, circuit_name, business_id)
        # Brief: only the state comes back (the counters too when the state changed).
        reply = self._run(
            circuit, op, trial_token=trial_token, failure_reason=failure_reason, brief=True
        )
        return reply.stats.state

    def defer_success(
        self, store_id: uuid.UUID | None, circuit_name: str, *, business_id: uuid.UUID | None = None
    ) -> None:
        """Record a success of a call that held no half-open trial, without a round trip.

        It is counted with this process's next ``allow`` of the circuit (in the same script run)
        or by a background send within ``safeguards.deferred.FLUSH_INTERVAL_S``; see that
        module for what the delay can and cannot change.
        """
        _DEFERRED.defer(CircuitId(store_id, circuit_name, business_id), None, self._send_deferred)

    def reset(
        self, store_id: uuid.UUID | None, circuit_name: str, *, business_id: uuid.UUID | None = None
    ) -> CircuitState:
        """Operator action: close the circuit and forget its window and wait growth."""
        circuit = CircuitId(store_id, circuit_name, business_id)
        reply = self._run(circuit, "reset")
        if reply.previous_state is None:  # no transition, but the operator expects a fresh row
            self._write(circuit, reply.stats)
        return reply.stats.state

    def stats(
        self, store_id: uuid.UUID | None, circuit_name: str, *, business_id: uuid.UUID | None = None
    ) -> CircuitStats:
        """The circuit's current state and counters, without changing anything."""
        return self._run(CircuitId(store_id, circuit_name, business_id), "peek").stats

    def flush_stats_to_postgres(
        self, *, chunk: int = FLUSH_CHUNK, budget_s: float = FLUSH_BUDGET_S
    ) -> int:
        """Write every circuit marked dirty since the last flush to PostgreSQL; returns how many.

        Pops the dirty set (``safeguards.circuit_breaker.dirty``) ``chunk`` members at a time:
        one pipelined snapshot per chunk (one round trip) and one multi-row upsert. Stops when
        the set is empty or after ``budget_s`` seconds (the rest waits for the next run). A
        failed upsert puts its chunk back and raises. Also advances the backstop scan a slice.
        """
        if not self.write_through:
            return 0
        MARKS.flush()  # this process's own marks first
        backstop_scan(self.client, BACKSTOP_KEYS)
        flushed, started = 0, time.monotonic()
        while True:
            popped = cast(list[bytes], self.client.spop(dirty_key(), chunk) or [])
            circuits = list({c for c in map(parse_member, popped) if c is not None})
            try:
                flushed += upsert_circuit_rows(self._snapshots(circuits), self.engine)
            except BaseException:
                if popped:  # keep them for the next flush
                    self.client.sadd(dirty_key(), *popped)
                raise
            if len(popped) < chunk or time.monotonic() - started > budget_s:
                return flushed

    def _snapshots(self, circuits: list[CircuitId]) -> list[tuple[CircuitId, CircuitStats]]:
        """Each circuit's stats read (and its dirty flag cleared) in one pipelined round trip."""
        if not circuits:
            return []
        # Pipelined per Cluster node (a cluster pipeline refuses EVALSHA).
        calls = [self.script_call(circuit, "snapshot") for circuit in circuits]
        replies = run_script_batch(self.client, SCRIPT, calls)
        rows = []
        for circuit, raw in zip(circuits, replies, strict=True):
            reply = parse_reply(raw)
            if "circuit_name" in reply.fields:  # else its keys expired: nothing to mirror
                rows.append((circuit, reply.stats))
        return rows

    def _run(
        self,
        circuit: CircuitId,
        op: str,
        *,
        trial_token: str | None = None,
        failure_reason: str | None = None,
        brief: bool = False,
        settled: int = 0,
    ) -> ScriptReply:
        keys, args = self.script_call(
            circuit, op, trial_token=trial_token, failure_reason=failure_reason, brief=brief
        )
        if settled:
            args.append(settled)
        return self.finish(circuit, evalsha(self.client, SCRIPT, keys, args))

    def _send_deferred(self, circuit: CircuitId, pending: Pending) -> None:
        self._run(circuit, "settle", brief=True, settled=pending.successes)

    def script_call(
        self,
        circuit: CircuitId,
        op: str,
        *,
        trial_token: str | None = None,
        failure_reason: str | None = None,
        brief: bool = False,
    ) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of one run of the script (for a composite script to run it too)."""
        config = self.config_for(circuit.circuit_name)
        keys, config_args, identity = _static(circuit, config)
        # The failure reason is often a provider's text: made storable, since a lone surrogate
        # cannot be encoded for Redis and a NUL cannot reach ``circuit_breaker_state``.
        reason = storable_text(failure_reason) if failure_reason else ""
        if op in _CHANGING:  # the mirror's dirty set (no round trip: sent in batches)
            MARKS.mark(self.client, circuit)
        return keys, [
            op,
            repr(self.clock.now()),
            *config_args,
            trial_token or "",
            reason,
            *identity,
            "1" if brief else "0",
        ]

    def finish(self, circuit: CircuitId, raw: list[Any]) -> ScriptReply:
        """Decode one run's reply; a transition is written through and announced."""
        reply = parse_reply(raw)
        if reply.previous_state is not None:
            self._on_transition(circuit, reply.previous_state, reply.stats)
        return reply

    @staticmethod
    def _identity(circuit: CircuitId) -> list[str]:
        return [str(circuit.store_id or ""), str(circuit.business_id or ""), circuit.circuit_name]

    def _on_transition(self, circuit: CircuitId, old: CircuitState, stats: CircuitStats) -> None:
        logger.info(
            "circuit %s/%s: %s -> %s (trips %d, next attempt %s)",
            circuit.scope,
            circuit.circuit_name,
            old.value,
            stats.state.value,
            stats.trip_count,
            stats.next_attempt_at,
        )
        self._write(circuit, stats)
        for listener in (*self.listeners, *_LISTENERS):
            try:
                listener(circuit.store_id, circuit.circuit_name, old, stats.state, stats)
            except Exception:
                # A listener (alerting, metrics) must never break the call it observes.
                logger.exception("circuit listener %r failed", listener)

    def _write(self, circuit: CircuitId, stats: CircuitStats) -> bool:
        if not self.write_through:
            return False
        try:
            upsert_circuit_row(circuit, stats, self.engine)
        except (SQLAlchemyError, OSError):
            # The Redis decision stands; the row is still marked dirty for the next flush.
            logger.exception(
                "circuit %s/%s: could not write %s to circuit_breaker_state",
                circuit.scope,
                circuit.circuit_name,
                stats.state.value,
            )
            return False
        return True


def _default_breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(get_redis(), clock=clock)


def check_circuit_breaker(
    store_id: uuid.UUID | None,
    circuit_name: str,
    *,
    business_id: uuid.UUID | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> CircuitDecision:
    """May a call to ``circuit_name`` of this store (or business) go ahead now?"""
    return _default_breaker(clock).allow(store_id, circuit_name, business_id=business_id)


def record_circuit_breaker_result(
    store_id: uuid.UUID | None,
    circuit_name: str,
    success: bool | None,
    *,
    failure_reason: str | None = None,
    trial_token: str | None = None,
    business_id: uuid.UUID | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> CircuitState:
    """Record a call's outcome (None: neither success nor failure); returns the new state."""
    return _default_breaker(clock).record(
        store_id,
        circuit_name,
        success,
        failure_reason=failure_reason,
        trial_token=trial_token,
        business_id=business_id,
    )


def circuit_stats(
    store_id: uuid.UUID | None, circuit_name: str, *, business_id: uuid.UUID | None = None
) -> CircuitStats:
    """The circuit's state and counters, read without reserving anything."""
    return _default_breaker(SYSTEM_CLOCK).stats(store_id, circuit_name, business_id=business_id)


def reset_circuit_breaker(
    store_id: uuid.UUID | None, circuit_name: str, *, business_id: uuid.UUID | None = None
) -> CircuitState:
    """Operator action: force the circuit closed."""
    return _default_breaker(SYSTEM_CLOCK).reset(store_id, circuit_name, business_id=business_id)


def flush_stats_to_postgres() -> int:
    """Mirror every changed circuit's counters to PostgreSQL (for a Beat task)."""
    return _default_breaker(SYSTEM_CLOCK).flush_stats_to_postgres()
