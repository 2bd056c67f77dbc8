"""Keeping subscriptions alive: Beat's renewal and health passes, and the sync-time check.

Renewals are enqueued at most once per cooldown per subscription (a marker in Redis), whoever
asks: Beat's renewal window, an unhealthy score in the health pass, or a sync that finds its
store's subscription expired or unhealthy before it starts.
"""

from __future__ import annotations

import logging
import uuid

import redis
from sqlalchemy import func, select

from models import MetricType, SubscriptionStatus
from safeguards.health_metrics.recorder import record_metric
from safeguards.redis_state import get_redis, key
from safeguards.webhook_health import record_subscription_health
from syncguard.db import service_session
from syncguard.settings import get_settings
from tasks import app
from tasks.subscriptions import current_health, due_for_renewal, live_subscription_ids, mark_expired
from tasks.webhooks import renew_subscription

log = logging.getLogger(__name__)


def request_renewal(subscription_id: uuid.UUID) -> bool:
    """Enqueue one renewal unless one was requested within the cooldown; True if enqueued."""
    cooldown_s = get_settings().renewal_request_cooldown_s
    try:
        fresh = get_redis().set(
            key("subscription-renewal", str(subscription_id)), 1, nx=True, ex=cooldown_s
        )
    except redis.RedisError as exc:
        # A duplicate renewal is harmless; a lost one is not: enqueue without the marker.
        record_metric(
            MetricType.SAFEGUARDS,
            "safeguard_unavailable",
            1.0,
            tags={"safeguard": "renewal_marker"},
        )
        log.warning("renewal marker unavailable, enqueueing anyway: %s", exc)
        fresh = True
    if fresh:
        renew_subscription.delay(str(subscription_id))
    return bool(fresh)


@app.task(name="tasks.webhooks.renew_expiring_subscriptions")  # type: ignore[untyped-decorator]
def renew_expiring_subscriptions() -> list[str]:
    """Enqueue a renewal for every live subscription inside its renewal window."""
    with service_session() as session:
        mark_expired(session)
        now = session.execute(select(func.now())).scalar_one()
        due = due_for_renewal(session, now)
    return [str(sid) for sid in due if request_renewal(sid)]


@app.task(name="tasks.webhooks.check_subscription_health")  # type: ignore[untyped-decorator]
def check_subscription_health() -> dict[str, int]:
    """Log every live subscription's health; renew those that are unhealthy or expired."""
    threshold = get_settings().health_renew_below
    with service_session() as session:
        mark_expired(session)
        ids = live_subscription_ids(session)
    checked = renewing = 0
    for sid in ids:
        reading = record_subscription_health(sid)
        if reading is None:
            continue
        checked += 1
        if reading.score < threshold and request_renewal(sid):
            renewing += 1
    return {"checked": checked, "renewing": renewing}


def ensure_healthy_subscription(store_id: uuid.UUID | str) -> bool:
    """Before a sync: renew the store's subscription if expired or unhealthy; True if enqueued."""
    with service_session() as session:
        health = current_health(session, uuid.UUID(str(store_id)))
    if health is None:
        return False
    expired = health.status is SubscriptionStatus.EXPIRED or (
        health.seconds_to_expiry is not None and health.seconds_to_expiry <= 0
    )
    unhealthy = health.health_score is not None and (
        health.health_score < get_settings().health_renew_below
    )
    return (expired or unhealthy) and request_renewal(health.subscription_id)


__all__ = [
    "check_subscription_health",
    "ensure_healthy_subscription",
    "renew_expiring_subscriptions",
    "request_renewal",
]
