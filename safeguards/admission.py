"""A guarded call's Redis work: one round trip in the common case.

The circuit breaker and the rate limiter each keep their own script and state; a guarded call
runs both in one script (``admission.lua``, ``settlement.lua`` include them as Lua functions).
The admission decides the call (circuit, then limiter and lease) and carries the deferred
outcomes of the scope's earlier successful calls (``safeguards.deferred``), so a run of guarded
calls costs one round trip each. An outcome that cannot wait (a failure, an ignored call, a
half-open trial) is settled at once, with the scope's deferred ones, in one round trip.
Atomic as a bonus: a half-open trial the limiter then refuses is given back in the same step.
Both safeguards key a store's state under the hash tag ``{store_id}``, so one call's keys share
a Redis Cluster slot.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, NamedTuple

from models.enums import CircuitState, Provider
from safeguards.circuit_breaker.breaker import SCRIPT as CIRCUIT_SCRIPT
from safeguards.circuit_breaker.breaker import CircuitBreaker
from safeguards.circuit_breaker.dirty import MARKS
from safeguards.circuit_breaker.states import CircuitId, ScriptReply
from safeguards.deferred import DEFERRED, Pending, Scope
from safeguards.hot_script import evalsha
from safeguards.rate_limit.limiter import CHECK, PendingDecision, RateLimiter, get_rate_limiter
from safeguards.rate_limit.limits import RateLimitDecision, RateLimits
from safeguards.redis_state import LuaScript, get_redis
from syncguard.settings import get_settings

ADMIT = LuaScript("safeguards", "admission", includes=(CIRCUIT_SCRIPT, CHECK))
SETTLE = LuaScript("safeguards", "settlement", includes=(CIRCUIT_SCRIPT,))

#: Seconds an admission of a closed circuit with limiter room counts as fresh evidence for
#: ``recently_admitted`` (the job-start preflight is skipped on it).
FRESH_S = 1.0
_admitted_at: dict[Scope, float] = {}


@dataclass(frozen=True)
class Admission:
    """Both safeguards' answers; ``rate`` is None when the circuit refused first."""

    circuit: ScriptReply
    rate: RateLimitDecision | None


class Verdict(NamedTuple):
    """A guarded call's admission, as the hot path needs it (no counters decoded)."""

    allowed: bool
    #: Which safeguard refused: "circuit_breaker" or "rate_limit"; None when allowed.
    refused_by: str | None
    retry_after_s: float
    #: The circuit's state, or the limiter's reason when it refused.
    detail: str
    trial_token: str | None
    lease_id: str | None


def _breaker() -> CircuitBreaker:
    return CircuitBreaker(get_redis())


def _run_admit(
    breaker: CircuitBreaker,
    limiter: RateLimiter,
    circuit: CircuitId,
    scope: Scope,
    operation: str,
    cost: int | None,
    consume: bool,
) -> tuple[list[Any], Any]:
    """One run of ADMIT (with the scope's deferred outcomes); returns (raw reply, pending)."""
    mode = "hit" if consume else "test"
    pending = DEFERRED.take(scope)
    ckeys, cargs = breaker.script_call(circuit, "allow" if consume else "peek", brief=consume)
    decision = limiter.prepare(
        mode,
        str(circuit.store_id),
        operation,
        scope[2],
        cost,
        settled=pending.successes if pending else 0,
        released=pending.leases if pending else (),
    )
    args = [mode, len(cargs) + 1, *cargs, pending.successes if pending else 0, *decision.args]
    try:
        raw = evalsha(limiter.client, ADMIT, ckeys + decision.keys, args)
    except BaseException:
        if pending:
            DEFERRED.give_back(scope, pending)
        raise
    return raw, decision


def admit(
    store_id: uuid.UUID,
    circuit_name: str,
    provider: Provider,
    operation: str,
    *,
    cost: int | None = None,
    consume: bool = True,
) -> Admission:
    """Decide one call: the circuit (reserving a half-open trial), then the limiter.

    ``consume`` False only reads (circuit peek, limiter test): the job-start preflight.
    Raises SafeguardUnavailable when Redis is unreachable.
    """
    breaker, limiter = _breaker(), get_rate_limiter()
    circuit = CircuitId(store_id, circuit_name)
    raw, decision = _run_admit(
        breaker, limiter, circuit, (store_id, circuit_name, provider), operation, cost, consume
    )
    reply = breaker.finish(circuit, raw[0])
    rate = limiter.finish(decision, raw[1]) if raw[1] else None
    if raw[2]:  # the trial given back: a transition there is announced too
        breaker.finish(circuit, raw[2])
    return Admission(reply, rate)


class _Prepared(NamedTuple):
    """What a scope's admissions of one operation share from call to call, built once."""

    limiter: RateLimiter
    breaker: CircuitBreaker
    limits: RateLimits
    circuit: CircuitId
    sid: str
    units: int
    keys: list[str]
    #: The circuit's ARGV after op and clock: configuration, no trial, no reason, identity.
    circuit_tail: tuple[Any, ...]
    #: The limiter's ARGV after mode, clock, cost and lease: lease TTL, concurrency, windows.
    limiter_tail: tuple[Any, ...]


#: Per (scope, operation, cost, Redis prefix); entries for one store are a handful.
_PREPARED: dict[tuple[Scope, str, int | None, str], _Prepared] = {}
_PREPARED_SIZE = 4096


def _prepared(scope: Scope, operation: str, cost: int | None) -> _Prepared:
    """The scope's prepared admission, rebuilt when the limiter, client or limits changed."""
    limiter, client = get_rate_limiter(), get_redis()
    cache_key = (scope, operation, cost, get_settings().redis_prefix)
    found = _PREPARED.get(cache_key)
    if (
        found is not None
        and found.limiter is limiter
        and found.breaker.client is client
        and _same(limiter.limits_for(scope[2], found.sid), found.limits)
    ):
        return found
    # Built by the general path's own functions, so the ARGV layout is written in one place.
    breaker = CircuitBreaker(client)
    circuit = CircuitId(scope[0], scope[1])
    ckeys, cargs = breaker.script_call(circuit, "allow", brief=True)
    decision = limiter.prepare("hit", str(scope[0]), operation, scope[2], cost)
    found = _Prepared(
        limiter,
        breaker,
        decision.limits,
        circuit,
        decision.sid,
        decision.units,
        ckeys + decision.keys,
        tuple(cargs[2:]),
        tuple(decision.args[4:]),
    )
    if len(_PREPARED) >= _PREPARED_SIZE:
        _PREPARED.clear()
    _PREPARED[cache_key] = found
    return found


def _same(limits: RateLimits, prepared: RateLimits) -> bool:
    # Usually the very object (the limiter's cache holds it until the store's overrides
    # reload); an equal one (overrides reloaded unchanged) keeps the prepared arguments too.
    return limits is prepared or limits == prepared


def admit_call(
    store_id: uuid.UUID,
    circuit_name: str,
    provider: Provider,
    operation: str,
    cost: int | None = None,
) -> Verdict:
    """``admit`` for the guard's hot path: consumes, decodes only what the guard needs.

    The same script run as ``admit`` (op "allow", mode "hit", brief), its keys and unchanging
    arguments prepared once per scope and operation (``_prepared``). A transition is still
    written through and announced, a refusal still fully decoded.
    Raises SafeguardUnavailable when Redis is unreachable.
    """
    scope = (store_id, circuit_name, provider)
    p = _prepared(scope, operation, cost)
    limiter, breaker, circuit = p.limiter, p.breaker, p.circuit
    lease = uuid.uuid4().hex if p.limits.concurrency > 0 else ""
    MARKS.mark(breaker.client, circuit)  # as script_call does for "allow"
    pending = DEFERRED.take(scope)
    settled = pending.successes if pending else 0
    released = pending.leases if pending else ()
    now_ms = int(limiter.clock.now() * 1000)  # as the limiter's own calls round it
    largs = ["hit", now_ms, p.units, lease, *p.limiter_tail, settled, *released]
    cargs = ["allow", repr(breaker.clock.now()), *p.circuit_tail]
    args = ["hit", len(cargs) + 1, *cargs, settled, *largs]
    try:
        raw = evalsha(limiter.client, ADMIT, p.keys, args)
    except BaseException:
        if pending:
            DEFERRED.give_back(scope, pending)
        raise
    craw, rraw = raw[0], raw[1]
    token = craw[2].decode() if isinstance(craw[2], bytes) else str(craw[2])
    if craw[3]:  # a transition (rare): written through and announced, as breaker.finish does
        state = breaker.finish(circuit, craw).stats.state.value
    else:
        state = craw[7].decode() if isinstance(craw[7], bytes) else str(craw[7])
    if raw[2]:
        breaker.finish(circuit, raw[2])
    if not craw[0]:
        return Verdict(False, "circuit_breaker", max(0.0, float(craw[1])), state, None, None)
    if not rraw[0] or rraw[8]:  # refused, or the store's first touch since the usage flush
        decision = PendingDecision(
            p.keys[4:], largs, provider, p.sid, operation, p.units, p.limits, lease
        )
        rate = limiter.finish(decision, rraw)
        if not rraw[0]:
            return Verdict(False, "rate_limit", rate.retry_after_s, rate.reason or "", None, None)
    if state == CircuitState.CLOSED.value:
        _admitted_at[scope] = time.monotonic()
    return Verdict(True, None, 0.0, state, token or None, lease or None)


def recently_admitted(store_id: uuid.UUID, circuit_name: str, provider: Provider) -> bool:
    """Whether this process admitted a call of the scope, circuit closed, within ``FRESH_S``."""
    at = _admitted_at.get((store_id, circuit_name, provider))
    return at is not None and time.monotonic() - at < FRESH_S


def defer_success(
    store_id: uuid.UUID, circuit_name: str, provider: Provider, lease_id: str | None
) -> None:
    """Count one non-trial success with the scope's next round trip (``safeguards.deferred``)."""
    DEFERRED.defer((store_id, circuit_name, provider), lease_id, flush_scope)


def flush_scope(scope: Scope, pending: Pending) -> None:
    """Send one scope's deferred outcomes alone (the background flush)."""
    _settle(scope, "settle", pending, lease_id=None, outcome="", trial_token=None, reason=None)


def settle(
    store_id: uuid.UUID,
    circuit_name: str,
    provider: Provider,
    *,
    lease_id: str | None,
    succeeded: bool,
    counted: bool | None,
    trial_token: str | None,
    failure_reason: str | None = None,
) -> None:
    """Record one admitted call's outcome in both safeguards now, in one round trip.

    ``succeeded``: the limiter's success/failure count; ``counted``: the circuit's outcome
    (True success, False a failure of the provider's health, None ignored). The scope's
    deferred successes go with it. Raises SafeguardUnavailable when Redis is unreachable.
    """
    scope = (store_id, circuit_name, provider)
    op = "ignored" if counted is None else "success" if counted else "failure"
    pending = DEFERRED.take(scope) or Pending()
    outcome = "success" if succeeded else "failure"
    try:
        _settle(scope, op, pending, lease_id, outcome, trial_token, failure_reason)
    except BaseException:
        if pending.successes or pending.leases:
            DEFERRED.give_back(scope, pending)
        raise


def _settle(
    scope: Scope,
    op: str,
    pending: Pending,
    lease_id: str | None,
    outcome: str,
    trial_token: str | None,
    reason: str | None,
) -> None:
    breaker, limiter = _breaker(), get_rate_limiter()
    store_id, circuit_name, provider = scope
    circuit = CircuitId(store_id, circuit_name)
    ckeys, cargs = breaker.script_call(
        circuit, op, trial_token=trial_token, failure_reason=reason, brief=True
    )
    rkeys, _ = limiter.release_call(str(store_id), None, provider, None)
    leases = [*pending.leases, lease_id] if lease_id else pending.leases
    args = [len(cargs) + 1, *cargs, pending.successes, pending.successes, outcome, *leases]
    raw = evalsha(limiter.client, SETTLE, ckeys + rkeys, args)
    breaker.finish(circuit, raw[0])
