"""Webhook subscription health: a pure 0..1 score and named failure patterns, then their storage.

The algorithm (``health_score``, ``detect_patterns``, ``assess``) is pure and takes plain numbers;
``gather_chunk`` reads them for a chunk of subscriptions in one statement and
``record_health_chunk`` writes the chunk's readings to ``webhook_health_log`` in one more.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session

from models import Provider, WebhookHealthLog
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


#: Subscriptions read, scored and logged per statement pair (one SELECT, one multi-row INSERT).
CHUNK = 1_000

#: One chunk of live subscriptions (keyset after ``:after``, or the ids ``:ids``) with every
#: input of their health, in one statement: LATERAL probes on the (store_id, created_at) and
#: (store_id, status) indexes, so its cost grows with the chunk, not with the history.
_INPUTS = """
SELECT s.id, s.store_id, s.business_id, s.provider, s.status, s.expires_at,
       s.consecutive_renewal_failures,
       s.last_renewed_at, s.created_at, s.last_notification_at,
       coalesce(w.total, 0) AS total, coalesce(w.failed, 0) AS failed,
       r.outcomes, r.errors,
       h.last_delivery, j.last_change
FROM webhook_subscriptions s
LEFT JOIN LATERAL (
    SELECT count(*) AS total, count(*) FILTER (WHERE NOT d.success) AS failed
    FROM webhook_delivery_log d
    WHERE d.store_id = s.store_id AND d.direction = 'inbound' AND d.created_at >= :since
          AND d.created_at <= :now
) w ON true
LEFT JOIN LATERAL (
    SELECT array_agg(r.success ORDER BY r.created_at DESC) AS outcomes,
           array_agg(r.error_message ORDER BY r.created_at DESC)
               FILTER (WHERE NOT r.success AND r.error_message <> '') AS errors
    FROM (
        SELECT d.success, d.error_message, d.created_at FROM webhook_delivery_log d
        WHERE d.store_id = s.store_id AND d.direction = 'inbound' AND d.created_at >= :since
          AND d.created_at <= :now
        ORDER BY d.created_at DESC LIMIT {sample}
    ) r
) r ON true
LEFT JOIN LATERAL (
    SELECT d.created_at AS last_delivery FROM webhook_delivery_log d
    WHERE d.store_id = s.store_id AND d.direction = 'inbound' AND d.created_at >= :horizon
      AND d.created_at <= :now
    ORDER BY d.store_id, d.created_at DESC LIMIT 1
) h ON true
LEFT JOIN LATERAL (
    SELECT max(j.finished_at) AS last_change FROM sync_jobs j
    WHERE j.store_id = s.store_id AND j.status = 'succeeded'
      AND j.messages_upserted + j.messages_deleted > 0
) j ON true
WHERE s.status IN ('active', 'expired') AND {where}
ORDER BY s.id
LIMIT :limit
"""


@dataclass(frozen=True)
class SubscriptionInputs:
    """One subscription's identity and its health inputs, as one chunk row gives them."""

    subscription_id: uuid.UUID
    store_id: uuid.UUID
    provider: Provider
    status: str
    inputs: HealthInputs


def inputs_sql(where: str) -> str:
    """The chunk's input SELECT (one row per live subscription, every input of its health) as
    SQL text, restricted by ``where`` (over ``s``, the subscriptions); binds ``:since``,
    ``:horizon``, ``:now``, ``:limit`` and those of ``where``. ``webhook_health_sql`` scores it
    in SQL."""
    return _INPUTS.format(sample=PATTERN_SAMPLE, where=where)


def _statement(where: str) -> Any:
    return text(inputs_sql(where))


_BY_KEYSET = _statement("s.id > :after AND s.id <= :last")
_BY_IDS = _statement("s.id = ANY(:ids)")


def gather_chunk(
    session: Session,
    now: datetime,
    window_s: float,
    *,
    after: uuid.UUID | None = None,
    last: uuid.UUID | None = None,
    ids: Sequence[uuid.UUID] | None = None,
    limit: int = CHUNK,
    horizon_s: float | None = None,
) -> list[SubscriptionInputs]:
    """The next ``limit`` live subscriptions with ``after < id <= last``, or those in ``ids``, each
    with its inputs; one statement. ``window_s``: the delivery window, seconds.

    The last inbound delivery is looked up only ``horizon_s`` back (default twice the longer of
    the window and ``health_silent_after_s``), so the lookup touches recent partitions only;
    a store silent for longer reads as heard last at its subscription's last notification or
    creation, which is past the silence threshold either way unless the subscription is new.
    """
    if horizon_s is None:
        horizon_s = 2 * max(window_s, float(get_settings().health_silent_after_s))
    params: dict[str, Any] = {
        "since": now - timedelta(seconds=window_s),
        "horizon": now - timedelta(seconds=horizon_s),
        # An upper bound too, so partitions created ahead of time are pruned from every probe.
        "now": now,
        "limit": limit,
    }
    if ids is not None:
        statement, params["ids"] = _BY_IDS, list(ids)
    else:
        statement, params["after"] = _BY_KEYSET, after or uuid.UUID(int=0)
        params["last"] = last or uuid.UUID(int=(1 << 128) - 1)
    return [_inputs_of(row, now) for row in session.execute(statement, params)]


def _inputs_of(row: Any, now: datetime) -> SubscriptionInputs:
    heard = max((t for t in (row.last_notification_at, row.last_delivery) if t), default=None)
    reference = heard or row.created_at
    inputs = HealthInputs(
        deliveries_total=int(row.total),
        deliveries_failed=int(row.failed),
        seconds_to_expiry=_seconds(row.expires_at, now) if row.expires_at else None,
        renewal_failures=row.consecutive_renewal_failures,
        recent_outcomes=[bool(x) for x in row.outcomes or ()],
        error_messages=list(row.errors or ()),
        seconds_since_renewal=_seconds(now, row.last_renewed_at or row.created_at),
        seconds_since_notification=_seconds(now, reference),
        mailbox_changed_since_notification=row.last_change is not None
        and row.last_change > reference,
    )
    return SubscriptionInputs(row.id, row.store_id, Provider(row.provider), row.status, inputs)


def record_health_chunk(
    session: Session,
    now: datetime,
    *,
    after: uuid.UUID | None = None,
    last: uuid.UUID | None = None,
    ids: Sequence[uuid.UUID] | None = None,
    limit: int = CHUNK,
    settings: Settings | None = None,
) -> list[tuple[SubscriptionInputs, HealthReading]]:
    """Score one chunk (see ``gather_chunk``) and append its readings to ``webhook_health_log``
    in one multi-row INSERT; returns each subscription with its reading, in id order."""
    s = settings or get_settings()
    gathered = gather_chunk(
        session, now, s.health_window_s, after=after, last=last, ids=ids, limit=limit
    )
    thresholds = {p: thresholds_for(p, s) for p in {g.provider for g in gathered}}
    readings = [(g, assess(g.inputs, thresholds[g.provider])) for g in gathered]
    if readings:
        session.execute(insert(WebhookHealthLog), [_row(g, r, now) for g, r in readings])
    return readings


def record_subscription_health(
    subscription_id: uuid.UUID,
    *,
    now: datetime | None = None,
    session: Session | None = None,
) -> HealthReading | None:
    """Compute one subscription's health and append it to ``webhook_health_log`` (None: gone or
    not live)."""
    with session_or_new(session) as s:
        moment = now or s.execute(select(func.now())).scalar_one()
        found = record_health_chunk(s, moment, ids=[subscription_id], limit=1)
    return found[0][1] if found else None


def _row(g: SubscriptionInputs, reading: HealthReading, moment: datetime) -> dict[str, Any]:
    inputs = g.inputs
    expiry = inputs.seconds_to_expiry
    details = {
        "components": reading.components,
        "inputs": {k: v for k, v in asdict(inputs).items() if k not in _LIST_INPUTS},
        "most_common_error": repeated_error(inputs.error_messages, 1),
        "status": g.status,
    }
    return {
        "subscription_id": g.subscription_id,
        "store_id": g.store_id,
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
