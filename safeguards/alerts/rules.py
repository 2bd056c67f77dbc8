"""Alert rules: pure functions from plain readings to the alert that should be open, if any.

Each rule answers one question over values already read (no I/O) and returns an ``AlertSpec``
when its condition holds, else None. The ``dedup_key`` names the condition's subject, so the
same condition seen again maps onto the one open alert, and a condition that returns after it
was resolved opens a new one.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from models.enums import AlertSeverity, CircuitState, StoreStatus
from syncguard.settings import Settings, get_settings


class AlertRule(enum.StrEnum):
    """The rules the evaluation owns (it resolves their alerts once the condition clears)."""

    SUBSCRIPTION_HEALTH_LOW = "subscription_health_low"
    CIRCUIT_OPEN = "circuit_open"
    RATE_LIMIT_DENIALS = "rate_limit_denials"
    DEAD_LETTER_BACKLOG = "dead_letter_backlog"
    STORE_NEEDS_REAUTH = "store_needs_reauth"


#: Subject of the system-wide dead-letter backlog alert (its business_id is NULL).
ALL_BUSINESSES = "all"


@dataclass(frozen=True)
class AlertSpec:
    """An alert that should be open: who it concerns, how bad, and how it deduplicates."""

    rule: AlertRule
    severity: AlertSeverity
    dedup_key: str
    message: str
    business_id: uuid.UUID | None = None
    store_id: uuid.UUID | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AlertThresholds:
    """Every threshold the rules compare with (from settings unless a caller passes its own)."""

    health_below: float
    health_critical_below: float
    denials_per_min_above: float
    denial_sample_min_s: float
    backlog_per_business_above: int
    backlog_overall_above: int

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> AlertThresholds:
        """The thresholds configured in the ``alerts`` settings section."""
        s = settings or get_settings()
        return cls(
            health_below=s.alert_health_below,
            health_critical_below=s.alert_health_critical_below,
            denials_per_min_above=s.alert_denials_per_min_above,
            denial_sample_min_s=s.alert_denial_sample_min_s,
            backlog_per_business_above=s.alert_backlog_per_business_above,
            backlog_overall_above=s.alert_backlog_overall_above,
        )


@dataclass(frozen=True)
class SubscriptionScore:
    """The latest health reading of one subscription."""

    business_id: uuid.UUID
    store_id: uuid.UUID
    subscription_id: uuid.UUID
    health_score: float
    failure_patterns: tuple[str, ...] = ()


@dataclass(frozen=True)
class CircuitReading:
    """One store circuit's state as ``circuit_breaker_state`` (or a transition) tells it."""

    business_id: uuid.UUID
    store_id: uuid.UUID
    circuit_name: str
    state: CircuitState
    trip_count: int = 0
    last_failure_reason: str | None = None


@dataclass(frozen=True)
class DenialSample:
    """A store's cumulative rate-limit denials at one moment (epoch seconds)."""

    denied_count: int
    at_s: float


@dataclass(frozen=True)
class StoreReading:
    """A store's connection status."""

    business_id: uuid.UUID
    store_id: uuid.UUID
    status: StoreStatus
    status_reason: str | None = None


def circuit_key(store_id: uuid.UUID, circuit_name: str) -> str:
    """Dedup key of a store circuit's alert."""
    return f"{AlertRule.CIRCUIT_OPEN}:{store_id}:{circuit_name}"


def health_key(subscription_id: uuid.UUID) -> str:
    """Dedup key of a subscription's low-health alert."""
    return f"{AlertRule.SUBSCRIPTION_HEALTH_LOW}:{subscription_id}"


def denials_key(store_id: uuid.UUID) -> str:
    """Dedup key of a store's rate-limit denials alert."""
    return f"{AlertRule.RATE_LIMIT_DENIALS}:{store_id}"


def backlog_key(business_id: uuid.UUID | None) -> str:
    """Dedup key of a business's dead-letter backlog alert (None: the system-wide one)."""
    return f"{AlertRule.DEAD_LETTER_BACKLOG}:{business_id or ALL_BUSINESSES}"


def reauth_key(store_id: uuid.UUID) -> str:
    """Dedup key of a store's re-authorisation alert."""
    return f"{AlertRule.STORE_NEEDS_REAUTH}:{store_id}"


def subscription_health_alert(
    reading: SubscriptionScore, thresholds: AlertThresholds
) -> AlertSpec | None:
    """A subscription whose latest score is under the threshold (critical under the lower one)."""
    if reading.health_score >= thresholds.health_below:
        return None
    critical = reading.health_score < thresholds.health_critical_below
    patterns = ", ".join(reading.failure_patterns) or "no named pattern"
    return AlertSpec(
        rule=AlertRule.SUBSCRIPTION_HEALTH_LOW,
        severity=AlertSeverity.CRITICAL if critical else AlertSeverity.WARNING,
        dedup_key=health_key(reading.subscription_id),
        message=(
            f"webhook subscription {reading.subscription_id} health score "
            f"{reading.health_score:.2f} is below {thresholds.health_below:.2f} ({patterns})"
        ),
        business_id=reading.business_id,
        store_id=reading.store_id,
        details={
            "subscription_id": str(reading.subscription_id),
            "health_score": reading.health_score,
            "threshold": thresholds.health_below,
            "failure_patterns": list(reading.failure_patterns),
        },
    )


def circuit_alert(reading: CircuitReading) -> AlertSpec | None:
    """A circuit that is not closed (open, or half-open and not yet proven healthy)."""
    if reading.state is CircuitState.CLOSED:
        return None
    return AlertSpec(
        rule=AlertRule.CIRCUIT_OPEN,
        severity=AlertSeverity.WARNING,
        dedup_key=circuit_key(reading.store_id, reading.circuit_name),
        message=(
            f"circuit {reading.circuit_name} of store {reading.store_id} is "
            f"{reading.state.value}: calls are refused and deferred"
        ),
        business_id=reading.business_id,
        store_id=reading.store_id,
        details={
            "circuit_name": reading.circuit_name,
            "state": reading.state.value,
            "trip_count": reading.trip_count,
            "last_failure_reason": reading.last_failure_reason,
        },
    )


def denial_rate_per_min(
    previous: DenialSample | None, current: DenialSample, min_sample_s: float
) -> float | None:
    """Denials per minute between two samples; None until an interval of ``min_sample_s``."""
    if previous is None or current.denied_count < previous.denied_count:
        return None  # no baseline yet, or the counter was reset: this sample is the baseline
    elapsed_s = current.at_s - previous.at_s
    if elapsed_s < min_sample_s:
        return None
    return (current.denied_count - previous.denied_count) * 60.0 / elapsed_s


def keeps_baseline(
    previous: DenialSample | None, current: DenialSample, min_sample_s: float
) -> bool:
    """True when the previous sample stays the baseline (the interval is still too short)."""
    return (
        previous is not None
        and current.denied_count >= previous.denied_count
        and current.at_s - previous.at_s < min_sample_s
    )


def rate_limit_alert(
    business_id: uuid.UUID, store_id: uuid.UUID, per_min: float, thresholds: AlertThresholds
) -> AlertSpec | None:
    """A store whose rate-limit denials per minute exceed the threshold."""
    if per_min <= thresholds.denials_per_min_above:
        return None
    return AlertSpec(
        rule=AlertRule.RATE_LIMIT_DENIALS,
        severity=AlertSeverity.WARNING,
        dedup_key=denials_key(store_id),
        message=(
            f"store {store_id} is denied by the rate limiter {per_min:.1f} times a minute "
            f"(threshold {thresholds.denials_per_min_above:g})"
        ),
        business_id=business_id,
        store_id=store_id,
        details={"denials_per_min": per_min, "threshold": thresholds.denials_per_min_above},
    )


def backlog_alert(
    business_id: uuid.UUID | None, unreviewed: int, thresholds: AlertThresholds
) -> AlertSpec | None:
    """Unreviewed dead-letter entries above the threshold (business None: all of them)."""
    overall = business_id is None
    threshold = (
        thresholds.backlog_overall_above if overall else thresholds.backlog_per_business_above
    )
    if unreviewed <= threshold:
        return None
    whose = "in total" if overall else f"for business {business_id}"
    return AlertSpec(
        rule=AlertRule.DEAD_LETTER_BACKLOG,
        severity=AlertSeverity.WARNING,
        dedup_key=backlog_key(business_id),
        message=f"{unreviewed} dead-letter entries await review {whose} (threshold {threshold})",
        business_id=business_id,
        details={"unreviewed": unreviewed, "threshold": threshold},
    )


def reauth_alert(reading: StoreReading) -> AlertSpec | None:
    """A store whose credentials were revoked: nothing syncs until someone re-authorises it."""
    if reading.status is not StoreStatus.NEEDS_REAUTH:
        return None
    return AlertSpec(
        rule=AlertRule.STORE_NEEDS_REAUTH,
        severity=AlertSeverity.CRITICAL,
        dedup_key=reauth_key(reading.store_id),
        message=f"store {reading.store_id} needs re-authorisation; its mailbox is not syncing",
        business_id=reading.business_id,
        store_id=reading.store_id,
        details={"status_reason": reading.status_reason},
    )


@dataclass(frozen=True)
class DenialStep:
    """One evaluation of the denial rule: alerts firing, keys held, and the new baselines."""

    firing: list[AlertSpec]
    held: set[str]
    baselines: dict[uuid.UUID, DenialSample]


def denial_step(
    counts: Iterable[tuple[uuid.UUID, uuid.UUID, int]],
    baselines: Mapping[uuid.UUID, DenialSample],
    now_s: float,
    thresholds: AlertThresholds,
) -> DenialStep:
    """Rate-limit alerts from each store's (business, store, denied_count) against its baseline."""
    step = DenialStep([], set(), {})
    for business_id, store_id, denied in counts:
        current, previous = DenialSample(denied, now_s), baselines.get(store_id)
        per_min = denial_rate_per_min(previous, current, thresholds.denial_sample_min_s)
        if per_min is None:
            step.held.add(denials_key(store_id))  # no rate yet: neither raise nor resolve
        elif spec := rate_limit_alert(business_id, store_id, per_min, thresholds):
            step.firing.append(spec)
        if not keeps_baseline(previous, current, thresholds.denial_sample_min_s):
            step.baselines[store_id] = current
    return step
