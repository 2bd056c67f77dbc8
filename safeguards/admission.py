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
from safeguards.circuit_breaker.states import CircuitId, ScriptReply
from safeguards.deferred import DEFERRED, Pending, Scope
from safeguards.hot_script import evalsha
from safeguards.rate_limit.limiter import CHECK, RateLimiter, get_rate_limiter
from safeguards.rate_limit.limits import RateLimitDecision
from safeguards.redis_state import LuaScript, get_redis

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


def admit_call(
    store_id: uuid.UUID,
    circuit_name: str,
    provider: Provider,
    operation: str,
    cost: int | None = None,
) -> Verdict:
    """``admit`` for the guard's hot path: consumes, decodes only what the guard needs.

    A transition is still written through and announced, a refusal still fully decoded.
    Raises SafeguardUnavailable when Redis is unreachable.
    """
    breaker, limiter = _breaker(), get_rate_limiter()
    circuit = CircuitId(store_id, circuit_name)
    scope = (store_id, circuit_name, provider)
    raw, decision = _run_admit(breaker, limiter, circuit, scope, operation, cost, True)
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
    if not rraw[0]:
        rate = limiter.finish(decision, rraw)
        return Verdict(False, "rate_limit", rate.retry_after_s, rate.reason or "", None, None)
    if rraw[8]:  # the store's first touch since the last usage flush
        limiter.finish(decision, rraw)
    if state == CircuitState.CLOSED.value:
        _admitted_at[scope] = time.monotonic()
    return Verdict(True, None, 0.0, state, token or None, decision.lease or None)


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
