"""The guard around one provider call: circuit, then limiter, then the call, then both recorded."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from celery.exceptions import SoftTimeLimitExceeded

from models import CircuitState, MetricType, Provider
from safeguards.circuit_breaker.breaker import (
    check_circuit_breaker,
    circuit_stats,
    record_circuit_breaker_result,
)
from safeguards.errors import (
    CallFailure,
    CircuitOpen,
    RateLimited,
    Refused,
    SafeguardUnavailable,
    ThrottledFailure,
    TransientFailure,
    ValidationFailure,
)
from safeguards.health_metrics.prometheus import count_decision
from safeguards.health_metrics.recorder import record_metric
from safeguards.rate_limit.limiter import (
    check_rate_limit,
    get_rate_limiter,
    record_rate_limit_request,
)
from safeguards.storable import DATA_ERRORS, data_error_kind, data_error_reason
from syncguard.settings import get_settings
from tasks.trace_events import guard_decision

log = logging.getLogger(__name__)

#: Maps any exception a call raised onto the taxonomy; None means "not a provider failure".
Classifier = Callable[[BaseException], CallFailure | None]


@dataclass(frozen=True)
class CallScope:
    """Whose quota and whose circuit a provider call spends."""

    store_id: uuid.UUID
    provider: Provider
    circuit_name: str


def default_classifier(exc: BaseException) -> CallFailure | None:
    """Typed failures pass through; timeouts and dropped connections are transient.

    Data the database refuses (``safeguards.storable.DATA_ERRORS``: DataError, IntegrityError)
    is a validation failure: the same data fails the same way on every retry. A lost database
    connection (OperationalError) is not in that list and stays retryable.
    """
    if isinstance(exc, CallFailure):
        return exc
    if isinstance(exc, SoftTimeLimitExceeded | TimeoutError | ConnectionError):
        return TransientFailure(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, DATA_ERRORS):
        reason = f"{data_error_kind(exc)}: {data_error_reason(exc)}"
        return ValidationFailure(f"the database refused the data: {reason}")
    return None


#: Cost the start-of-job check asks the limiter about (it consumes nothing).
PREFLIGHT_COST = 1


def preflight(scope: CallScope) -> None:
    """Fail fast at job start: refuse when the circuit is open or the limiter has no room.

    Reads only: no half-open trial is reserved and no quota is consumed.
    """
    try:
        stats = circuit_stats(scope.store_id, scope.circuit_name)
        rate = get_rate_limiter().test(
            str(scope.store_id), "preflight", provider=scope.provider, cost=PREFLIGHT_COST
        )
    except SafeguardUnavailable as exc:
        _degraded("preflight", exc)
        return
    wait_s = stats.next_attempt_at.timestamp() - time.time() if stats.next_attempt_at else 0.0
    if stats.state is CircuitState.OPEN and wait_s > 0:
        raise CircuitOpen(
            f"circuit {scope.circuit_name!r} of store {scope.store_id} is open", wait_s
        )
    if not rate.allowed:
        raise RateLimited(
            f"{scope.provider} for store {scope.store_id}: {rate.reason}", rate.retry_after_s
        )


@contextmanager
def guarded_call(
    scope: CallScope,
    operation: str,
    *,
    cost: int | None = None,
    classify: Classifier = default_classifier,
) -> Iterator[None]:
    """Admit one call through circuit and limiter, then record its outcome in both.

    Raises CircuitOpen / RateLimited when refused; re-raises the call's own error after
    recording it, converted to its CallFailure when ``classify`` recognises it.
    """
    try:
        trial_token = _admit_circuit(scope)
        lease_id = _admit_rate(scope, operation, cost, trial_token)
    except Refused as refused:
        guard_decision(scope, operation, refused)  # an event on the task's trace span
        raise
    guard_decision(scope, operation)
    try:
        yield
    except BaseException as exc:
        failure = classify(exc)
        _record(scope, failure, lease_id, trial_token)
        if failure is not None and failure is not exc:
            raise failure from exc
        raise
    else:
        _record_success(scope, lease_id, trial_token)


def _admit_circuit(scope: CallScope) -> str | None:
    """Admit through the circuit; returns the half-open trial's token when one was reserved."""
    try:
        decision = check_circuit_breaker(scope.store_id, scope.circuit_name)
    except SafeguardUnavailable as exc:
        count_decision("circuit_breaker", "unavailable")
        _degraded("circuit_breaker", exc)
        return None
    count_decision("circuit_breaker", "allowed" if decision.allowed else "refused")
    if not decision.allowed:
        raise CircuitOpen(
            f"circuit {scope.circuit_name!r} of store {scope.store_id} is {decision.state}",
            decision.retry_after_s,
        )
    return decision.trial_token


def _admit_rate(
    scope: CallScope, operation: str, cost: int | None, trial_token: str | None
) -> str | None:
    try:
        decision = check_rate_limit(scope.store_id, operation, provider=scope.provider, cost=cost)
    except SafeguardUnavailable as exc:
        count_decision("rate_limit", "unavailable")
        _degraded("rate_limit", exc)
        return None
    count_decision("rate_limit", "allowed" if decision.allowed else "refused")
    if not decision.allowed:
        if trial_token:  # give the half-open trial back: this call never happened
            _safely(
                record_circuit_breaker_result,
                scope.store_id,
                scope.circuit_name,
                None,
                trial_token=trial_token,
            )
        raise RateLimited(
            f"{scope.provider} {operation} for store {scope.store_id}: {decision.reason}",
            decision.retry_after_s,
        )
    return decision.lease_id


def _record(
    scope: CallScope, failure: CallFailure | None, lease_id: str | None, trial_token: str | None
) -> None:
    # A provider's Retry-After blocks the store for every worker whatever the status came
    # with (a 503 as much as a 429); a throttle without one backs off in the limiter itself.
    retry_after = failure.retry_after_s if failure is not None else None
    _safely(
        record_rate_limit_request,
        scope.store_id,
        False,
        provider=scope.provider,
        lease_id=lease_id,
        retry_after_s=retry_after,
        throttled=isinstance(failure, ThrottledFailure) or retry_after is not None,
    )
    # Only transient failures are the provider's ill health; the rest are ignored outcomes.
    counted: bool | None = False if isinstance(failure, TransientFailure) else None
    reason = str(failure) if failure is not None else None
    _safely(
        record_circuit_breaker_result,
        scope.store_id,
        scope.circuit_name,
        counted,
        failure_reason=reason,
        trial_token=trial_token,
    )


def _record_success(scope: CallScope, lease_id: str | None, trial_token: str | None) -> None:
    _safely(
        record_rate_limit_request,
        scope.store_id,
        True,
        provider=scope.provider,
        lease_id=lease_id,
    )
    _safely(
        record_circuit_breaker_result,
        scope.store_id,
        scope.circuit_name,
        True,
        trial_token=trial_token,
    )


def _safely(fn: Callable[..., object], *args: object, **kwargs: object) -> None:
    """Recording an outcome must never turn a finished call into a failed one.

    Nor may it change how a failed call is classified: any other error while recording (an
    unencodable text, a bug) is logged and counted, and the call's own outcome stands.
    """
    which = getattr(fn, "__name__", "safeguard")
    try:
        fn(*args, **kwargs)
    except SafeguardUnavailable as exc:
        _degraded(which, exc, may_refuse=False)
    except Exception:
        log.exception("%s failed while recording an outcome; the call's own outcome stands", which)
        record_metric(
            MetricType.SAFEGUARDS, "safeguard_record_failed", 1.0, tags={"safeguard": which}
        )


def _degraded(which: str, exc: SafeguardUnavailable, *, may_refuse: bool = True) -> None:
    """Apply the configured fail mode, always with a metric and a log line."""
    settings = get_settings()
    record_metric(MetricType.SAFEGUARDS, "safeguard_unavailable", 1.0, tags={"safeguard": which})
    if may_refuse and settings.safeguard_fail_mode == "closed":
        log.warning("%s unavailable, failing closed (the call is deferred): %s", which, exc)
        raise RateLimited(f"{which} unavailable: {exc}", settings.fail_closed_retry_s) from exc
    log.warning("%s unavailable, failing open (the call goes unguarded): %s", which, exc)
