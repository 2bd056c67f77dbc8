"""Webhook subscription health: a pure 0..1 score and named failure patterns, then their storage.

The algorithm (``health_score``, ``detect_patterns``, ``assess``) is pure and takes plain numbers;
``gather_inputs`` reads them for one subscription with a few indexed queries and
``record_subscription_health`` writes the reading to ``webhook_health_log``.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from models import (
    Direction,
    Provider,
    SyncJob,
    SyncJobStatus,
    WebhookDeliveryLog,
    WebhookHealthLog,
    WebhookSubscription,
)
from syncguard.db import session_or_new
from syncguard.settings import Settings, get_settings

#: Successful pseudo-deliveries added to the observed ones, so a handful of deliveries cannot
#: swing the score to an extreme and no deliveries at all reads as neutral (1.0), not as zero.
DELIVERY_PRIOR = 2.0
#: Each consecutive renewal failure multiplies the score by this.
RENEWAL_FAILURE_FACTOR = 0.5
#: Newest inbound deliveries read for the run and repeated-error patterns (count).
PATTERN_SAMPLE = 200

CONSECUTIVE_FAILURES = "consecutive_failures"
REPEATED_ERROR = "repeated_error"
EXPIRING_WITHOUT_RENEWAL = "expiring_without_renewal"
SILENT_SUBSCRIPTION = "silent_subscription"
RENEWAL_FAILING = "renewal_failing"


@dataclass(frozen=True)
class HealthThresholds:
    """When each pattern fires, and the expiry horizon of a full score."""

    #: Seconds to expiry at and beyond which the expiry component is 1.0.
    expiry_horizon_s: float
    consecutive_failures: int = 5
    repeated_error: int = 3
    expiring_within_s: float = 3600.0
    renewal_stale_s: float = 6 * 3600.0
    silent_after_s: float = 6 * 3600.0
    #: Renewals failed in a row that name the ``renewal_failing`` pattern.
    renewal_failures: int = 2


@dataclass(frozen=True)
class HealthInputs:
    """Everything the score and the patterns read, as plain values."""

    deliveries_total: int
    deliveries_failed: int
    #: None when the subscription has no known expiry.
    seconds_to_expiry: float | None
    renewal_failures: int
    #: Newest first: success of each recent inbound delivery.
    recent_outcomes: Sequence[bool] = ()
    #: Error messages of the failed deliveries in the window.
    error_messages: Sequence[str] = ()
    #: Since the last renewal, or the creation when never renewed.
    seconds_since_renewal: float | None = None
    #: Since the last notification, or the creation when none came yet.
    seconds_since_notification: float | None = None
    #: A sync found mail changes after the last notification (so notifications are missing).
    mailbox_changed_since_notification: bool = False


@dataclass(frozen=True)
class HealthReading:
    """The score, its components and the patterns found."""

    score: float
    success_rate: float | None
    components: dict[str, float]
    patterns: list[str] = field(default_factory=list)


def delivery_component(total: int, failed: int, prior: float = DELIVERY_PRIOR) -> float:
    """Smoothed success rate: (succeeded + prior) / (total + prior); 1.0 with no deliveries."""
    succeeded = max(0, total - failed)
    return (succeeded + prior) / (max(total, 0) + prior)


def expiry_component(seconds_to_expiry: float | None, horizon_s: float) -> float:
    """1.0 at or beyond ``horizon_s`` before expiry, falling linearly to 0.0 at expiry."""
    if seconds_to_expiry is None or seconds_to_expiry <= 0:
        return 0.0
    if horizon_s <= 0:
        return 1.0
    return min(1.0, seconds_to_expiry / horizon_s)


def renewal_component(consecutive_failures: int) -> float:
    """Halves with every consecutive renewal failure: 1, 0.5, 0.25, ..."""
    return float(RENEWAL_FAILURE_FACTOR ** max(0, consecutive_failures))


def health_score(inputs: HealthInputs, horizon_s: float) -> tuple[float, dict[str, float]]:
    """The 0..1 health of a subscription and its three components.

    ``score = delivery * expiry * renewal`` where

    - ``delivery = (succeeded + 2) / (total + 2)`` over the window: two pseudo-successes make
      "no deliveries" neutral (1.0) and keep one failure among few deliveries from dominating;
    - ``expiry = clamp(seconds_to_expiry / horizon_s, 0, 1)``: 1.0 until the renewal window
      opens, then falling linearly to 0.0 at expiry (and 0.0 when the expiry is unknown);
    - ``renewal = 0.5 ** consecutive_renewal_failures``.

    A product, not a weighted mean: each component is a necessary condition. An expired
    subscription delivers nothing however good its past deliveries were, so it must score 0,
    which no weighted mean gives; and unlike ``min`` a product lets two moderate problems
    together (some failed deliveries *and* a failed renewal) rank below either alone.
    """
    components = {
        "delivery": delivery_component(inputs.deliveries_total, inputs.deliveries_failed),
        "expiry": expiry_component(inputs.seconds_to_expiry, horizon_s),
        "renewal": renewal_component(inputs.renewal_failures),
    }
    score = components["delivery"] * components["expiry"] * components["renewal"]
    return min(1.0, max(0.0, score)), components


def has_consecutive_failures(recent_outcomes: Sequence[bool], threshold: int) -> bool:
    """The newest ``threshold`` or more deliveries all failed."""
    run = 0
    for success in recent_outcomes:
        if success:
            break
        run += 1
    return threshold > 0 and run >= threshold


def repeated_error(error_messages: Sequence[str], threshold: int) -> str | None:
    """The most frequent error message when it occurred at least ``threshold`` times."""
    counts = Counter(m for m in error_messages if m)
    if not counts or threshold <= 0:
        return None
    message, seen = counts.most_common(1)[0]
    return message if seen >= threshold else None


def is_expiring_without_renewal(inputs: HealthInputs, thresholds: HealthThresholds) -> bool:
    """Expiry is near (or past) and nothing renewed the subscription for a long while."""
    if inputs.seconds_to_expiry is None or inputs.seconds_to_expiry > thresholds.expiring_within_s:
        return False
    since = inputs.seconds_since_renewal
    return since is None or since > thresholds.renewal_stale_s


def is_silent(inputs: HealthInputs, thresholds: HealthThresholds) -> bool:
    """No notification for too long although syncs found the mailbox changing meanwhile."""
    since = inputs.seconds_since_notification
    quiet_too_long = since is None or since > thresholds.silent_after_s
    return quiet_too_long and inputs.mailbox_changed_since_notification


def detect_patterns(inputs: HealthInputs, thresholds: HealthThresholds) -> list[str]:
    """The names of the failure patterns present, in a stable order."""
    found = []
    if has_consecutive_failures(inputs.recent_outcomes, thresholds.consecutive_failures):
        found.append(CONSECUTIVE_FAILURES)
    if repeated_error(inputs.error_messages, thresholds.repeated_error) is not None:
        found.append(REPEATED_ERROR)
    if is_expiring_without_renewal(inputs, thresholds):
        found.append(EXPIRING_WITHOUT_RENEWAL)
    if is_silent(inputs, thresholds):
        found.append(SILENT_SUBSCRIPTION)
    if inputs.renewal_failures >= thresholds.renewal_failures:
        found.append(RENEWAL_FAILING)
    return found


def assess(inputs: HealthInputs, thresholds: HealthThresholds) -> HealthReading:
    """Score and patterns of one subscription."""
    score, components = health_score(inputs, thresholds.expiry_horizon_s)
    total = inputs.deliveries_total
    rate = (total - inputs.deliveries_failed) / total if total > 0 else None
    return HealthReading(score, rate, components, detect_patterns(inputs, thresholds))


# --- storage -------------------------------------------------------------------------------


def thresholds_for(provider: Provider, settings: Settings | None = None) -> HealthThresholds:
    """The configured thresholds; the expiry horizon is the provider's renewal window."""
    s = settings or get_settings()
    horizon = s.gmail_watch_renew_before_s if provider is Provider.GMAIL else s.graph_renew_before_s
    return HealthThresholds(
        expiry_horizon_s=float(horizon),
        consecutive_failures=s.health_consecutive_failures,
        repeated_error=s.health_repeated_error,
        expiring_within_s=float(s.health_expiring_within_s),
        renewal_stale_s=float(s.health_renewal_stale_s),
        silent_after_s=float(s.health_silent_after_s),
        renewal_failures=s.health_renewal_failures,
    )


def _seconds(later: datetime, earlier: datetime | None) -> float | None:
    return None if earlier is None else (later - earlier).total_seconds()


def gather_inputs(
    session: Session, sub: WebhookSubscription, now: datetime, window_s: float
) -> HealthInputs:
    """Read one subscription's inputs: three queries on (store_id, created_at|status) indexes."""
    inbound = (
        WebhookDeliveryLog.store_id == sub.store_id,
        WebhookDeliveryLog.direction == Direction.INBOUND,
    )
    since = now - timedelta(seconds=window_s)
    recent = session.execute(
        select(WebhookDeliveryLog.success, WebhookDeliveryLog.error_message)
        .where(*inbound, WebhookDeliveryLog.created_at >= since)
        .order_by(WebhookDeliveryLog.created_at.desc())
        .limit(PATTERN_SAMPLE)
    ).all()
    total, failed, last_delivery = session.execute(
        select(
            func.count().filter(WebhookDeliveryLog.created_at >= since),
            func.count().filter(
                WebhookDeliveryLog.created_at >= since, ~WebhookDeliveryLog.success
            ),
            func.max(WebhookDeliveryLog.created_at),
        ).where(*inbound)
    ).one()
    last_change = session.execute(
        select(func.max(SyncJob.finished_at)).where(
            SyncJob.store_id == sub.store_id,
            SyncJob.status == SyncJobStatus.SUCCEEDED,
            SyncJob.messages_upserted + SyncJob.messages_deleted > 0,
        )
    ).scalar_one()
    heard = max((t for t in (sub.last_notification_at, last_delivery) if t), default=None)
    reference = heard or sub.created_at
    return HealthInputs(
        deliveries_total=int(total),
        deliveries_failed=int(failed),
        seconds_to_expiry=_seconds(sub.expires_at, now) if sub.expires_at else None,
        renewal_failures=sub.consecutive_renewal_failures,
        recent_outcomes=[bool(row.success) for row in recent],
        error_messages=[
            row.error_message for row in recent if not row.success and row.error_message
        ],
        seconds_since_renewal=_seconds(now, sub.last_renewed_at or sub.created_at),
        seconds_since_notification=_seconds(now, reference),
        mailbox_changed_since_notification=last_change is not None and last_change > reference,
    )


def record_subscription_health(
    subscription_id: uuid.UUID,
    *,
    now: datetime | None = None,
    session: Session | None = None,
) -> HealthReading | None:
    """Compute one subscription's health and append it to ``webhook_health_log`` (None: gone)."""
    settings = get_settings()
    with session_or_new(session) as s:
        sub = s.get(WebhookSubscription, subscription_id)
        if sub is None:
            return None
        moment = now or s.execute(select(func.now())).scalar_one()
        inputs = gather_inputs(s, sub, moment, settings.health_window_s)
        reading = assess(inputs, thresholds_for(sub.provider, settings))
        s.execute(insert(WebhookHealthLog).values(**_row(sub, inputs, reading, moment)))
    return reading


def _row(
    sub: WebhookSubscription, inputs: HealthInputs, reading: HealthReading, moment: datetime
) -> dict[str, Any]:
    expiry = inputs.seconds_to_expiry
    details = {
        "components": reading.components,
        "inputs": {k: v for k, v in asdict(inputs).items() if k not in _LIST_INPUTS},
        "most_common_error": repeated_error(inputs.error_messages, 1),
        "status": sub.status.value,
    }
    return {
        "subscription_id": sub.id,
        "store_id": sub.store_id,
        "health_score": reading.score,
        "success_rate": reading.success_rate,
        "deliveries_total": inputs.deliveries_total,
        "deliveries_failed": inputs.deliveries_failed,
        "seconds_to_expiry": None if expiry is None else int(expiry),
        "renewal_failures": inputs.renewal_failures,
        "failure_patterns": reading.patterns,
        "details": details,
        "checked_at": moment,
    }


_LIST_INPUTS = frozenset({"recent_outcomes", "error_messages"})
