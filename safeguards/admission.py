"""A guarded call's two Redis round trips: admission (circuit + limiter) and settlement.

The circuit breaker and the rate limiter each keep their own script and state; a guarded call
runs both in one script (``admission.lua``, ``settlement.lua`` include them as Lua functions)
so the common case costs one round trip before the call and one after, instead of one per
safeguard and step. Atomic as a bonus: a half-open trial the limiter then refuses is given back
in the same step, so no other worker ever sees it reserved. Both safeguards key a store's state
under the hash tag ``{store_id}``, so one call's keys share a Redis Cluster slot.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from models.enums import Provider
from safeguards.circuit_breaker.breaker import SCRIPT as CIRCUIT_SCRIPT
from safeguards.circuit_breaker.breaker import CircuitBreaker
from safeguards.circuit_breaker.states import CircuitId, ScriptReply
from safeguards.rate_limit.limiter import CHECK, RELEASE, get_rate_limiter
from safeguards.rate_limit.limits import RateLimitDecision
from safeguards.redis_state import LuaScript, get_redis, run_script

ADMIT = LuaScript("safeguards", "admission", includes=(CIRCUIT_SCRIPT, CHECK))
SETTLE = LuaScript("safeguards", "settlement", includes=(CIRCUIT_SCRIPT, RELEASE))


@dataclass(frozen=True)
class Admission:
    """Both safeguards' answers; ``rate`` is None when the circuit refused first."""

    circuit: ScriptReply
    rate: RateLimitDecision | None


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
    breaker = CircuitBreaker(get_redis())
    limiter = get_rate_limiter()
    circuit = CircuitId(store_id, circuit_name)
    mode = "hit" if consume else "test"
    ckeys, cargs = breaker.script_call(circuit, "allow" if consume else "peek", brief=consume)
    pending = limiter.prepare(mode, str(store_id), operation, provider, cost)
    args = [mode, len(cargs), *cargs, *pending.args]
    raw = run_script(limiter.client, ADMIT, ckeys + pending.keys, args)
    reply = breaker.finish(circuit, raw[0])
    rate = limiter.finish(pending, raw[1]) if raw[1] else None
    if raw[2]:  # the trial given back: a transition there is announced too
        breaker.finish(circuit, raw[2])
    return Admission(reply, rate)


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
    """Record one admitted call's outcome in both safeguards, in one round trip.

    ``succeeded``: the limiter's success/failure count; ``counted``: the circuit's outcome
    (True success, False a failure of the provider's health, None ignored). Raises
    SafeguardUnavailable when Redis is unreachable.
    """
    breaker = CircuitBreaker(get_redis())
    limiter = get_rate_limiter()
    circuit = CircuitId(store_id, circuit_name)
    op = "ignored" if counted is None else "success" if counted else "failure"
    ckeys, cargs = breaker.script_call(
        circuit, op, trial_token=trial_token, failure_reason=failure_reason, brief=True
    )
    rkeys, rargs = limiter.release_call(str(store_id), lease_id, provider, succeeded)
    raw = run_script(limiter.client, SETTLE, ckeys + rkeys, [len(cargs), *cargs, *rargs])
    breaker.finish(circuit, raw[0])
