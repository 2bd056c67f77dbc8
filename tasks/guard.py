"""The guard around one provider call: circuit, then limiter, then the call, then both recorded.

One Redis round trip per guarded call in the common case: the admission (circuit, limiter,
lease) is one script run, and a success without a half-open trial is deferred to ride along
with the scope's next admission (``safeguards.deferred``); any other outcome is settled at once.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_shutdown

from models import CircuitState, MetricType, Provider
from safeguards.admission import admit, admit_call, defer_success, recently_admitted, settle
from safeguards.deferred import DEFERRED
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
from safeguards.health_metrics.prometheus import COUNTERS, count_decision, count_decisions
from safeguards.health_metrics.recorder import record_metric
from safeguards.rate_limit.limiter import get_rate_limiter
from safeguards.storable import DATA_ERRORS, data_error_kind, data_error_reason
from syncguard.settings import get_settings
from tasks.provider_apps import app_quota
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

    Reads only (one round trip): no half-open trial is reserved and no quota is consumed.
    Advisory, since every guarded call is decided on its own: skipped without a round trip
    when this process admitted a call of the scope, circuit closed, within the last second.
    """
    if recently_admitted(scope.store_id, scope.circuit_name, scope.provider):
        return
    try:
        admission = admit(
            scope.store_id,
            scope.circuit_name,
            scope.provider,
            "preflight",
            cost=PREFLIGHT_COST,
            consume=False,
        )
    except SafeguardUnavailable as exc:
        _degraded("preflight", exc)
        return
    stats, rate = admission.circuit.stats, admission.rate
    wait_s = stats.next_attempt_at.timestamp() - time.time() if stats.next_attempt_at else 0.0
    if stats.state is CircuitState.OPEN and wait_s > 0:
        raise CircuitOpen(
            f"circuit {scope.circuit_name!r} of store {scope.store_id} is open", wait_s
        )
    if rate is not None and not rate.allowed:
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

    One Redis round trip before the call (``safeguards.admission.admit_call``, which also
    carries the scope's deferred successes); after it, a success without a half-open trial is
    deferred (``defer_success``), any other outcome settled in one round trip; a provider
    throttle adds one. The provider app's quota is spent first (``tasks.provider_apps``: in
    process but once per leased block). Raises CircuitOpen / RateLimited when refused; re-raises
    the call's own error after recording it, converted to its CallFailure when ``classify``
    recognises it.
    """
    try:
        with app_quota(scope, operation, cost):  # the provider app's quota, then the store's
            admitted = _admit(scope, operation, cost)
    except Refused as refused:
        guard_decision(scope, operation, refused)  # an event on the task's trace span
        raise
    guard_decision(scope, operation)
    # None: the safeguards were unreachable and the call goes unguarded (fail open).
    trial_token, lease_id = admitted or (None, None)
    try:
        yield
    except BaseException as exc:
        failure = classify(exc)
        _record(scope, failure, lease_id, trial_token)
        if failure is not None and failure is not exc:
            raise failure from exc
        raise
    if admitted is None:
        _safely(
            settle,
            scope.store_id,
            scope.circuit_name,
            scope.provider,
            lease_id=None,
            succeeded=True,
            counted=True,
            trial_token=None,
        )
    elif trial_token is None:
        defer_success(scope.store_id, scope.circuit_name, scope.provider, lease_id)
    else:  # a half-open trial's outcome decides the circuit: it cannot wait
        _safely(
            settle,
            scope.store_id,
            scope.circuit_name,
            scope.provider,
            lease_id=lease_id,
            succeeded=True,
            counted=True,
            trial_token=trial_token,
        )


def _admit(
    scope: CallScope, operation: str, cost: int | None
) -> tuple[str | None, str | None] | None:
    """Admit through circuit then limiter; returns (half-open trial token, lease id), or None
    when the safeguards are unreachable and the fail mode lets the call go unguarded."""
    try:
        verdict = admit_call(scope.store_id, scope.circuit_name, scope.provider, operation, cost)
    except SafeguardUnavailable as exc:
        for which in ("circuit_breaker", "rate_limit"):
            count_decision(which, "unavailable")
            _degraded(which, exc)
        return None
    if verdict.allowed:
        count_decisions("allowed", "allowed")
        return verdict.trial_token, verdict.lease_id
    if verdict.refused_by == "circuit_breaker":
        count_decisions("refused", None)
        raise CircuitOpen(
            f"circuit {scope.circuit_name!r} of store {scope.store_id} is {verdict.detail}",
            verdict.retry_after_s,
        )
    count_decisions("allowed", "refused")
    # The script gave the half-open trial back: this call never happened.
    raise RateLimited(
        f"{scope.provider} {operation} for store {scope.store_id}: {verdict.detail}",
        verdict.retry_after_s,
    )


def _record(
    scope: CallScope, failure: CallFailure | None, lease_id: str | None, trial_token: str | None
) -> None:
    # Only transient failures are the provider's ill health; the rest are ignored outcomes.
    counted: bool | None = False if isinstance(failure, TransientFailure) else None
    _safely(
        settle,
        scope.store_id,
        scope.circuit_name,
        scope.provider,
        lease_id=lease_id,
        succeeded=False,
        counted=counted,
        trial_token=trial_token,
        failure_reason=str(failure) if failure is not None else None,
    )
    # A provider's Retry-After blocks the store for every worker whatever the status came
    # with (a 503 as much as a 429); a throttle without one backs off in the limiter itself.
    retry_after = failure.retry_after_s if failure is not None else None
    if isinstance(failure, ThrottledFailure) or retry_after is not None:
        _safely(
            get_rate_limiter().throttle,
            str(scope.store_id),
            retry_after,
            provider=scope.provider,
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


# A prefork child leaves by os._exit, past atexit: its deferred outcomes (successes, leases)
# are sent here, or its leases would block the store's concurrency until they expire; then its
# buffered counters (decisions, task runs), or what it counted since the last flush is lost.
worker_process_shutdown.connect(lambda **_: (DEFERRED.flush(), COUNTERS.flush()), weak=False)
