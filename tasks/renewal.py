"""Keeping subscriptions alive: Beat's renewal and health passes, and the sync-time check.

Renewals are enqueued at most once per cooldown per subscription (a marker in Redis), whoever
asks: Beat's renewal window, an unhealthy score in the health pass, or a sync that finds its
store's subscription expired or unhealthy before it starts.

The renewal pass also creates what is missing: an active, connected store with no subscription
row that is live, pending or failed (and no unreviewed archived creation) gets a
``create_subscription``, at most once per cooldown per store. The stores and their
``webhook_subscriptions`` rows are thus the ledger of subscription work: a creation the broker
lost is enqueued again by the first pass after its cooldown.
"""

from __future__ import annotations

import logging
import uuid

import redis
from sqlalchemy import and_, exists, func, select

from models import (
    FailedJobArchive,
    MetricType,
    Store,
    StoreStatus,
    SubscriptionStatus,
    WebhookSubscription,
)
from safeguards.health_metrics.recorder import record_metric
from safeguards.redis_state import get_redis, key
from safeguards.webhook_health import record_subscription_health
from syncguard.db import service_session
from syncguard.settings import get_settings
from tasks import app
from tasks.subscriptions import current_health, due_for_renewal, live_subscription_ids, mark_expired
from tasks.webhooks import create_subscription, renew_subscription

log = logging.getLogger(__name__)


#: Statuses of a row that stands for the store's subscription: nothing to create.
_PRESENT = (
    SubscriptionStatus.PENDING,
    SubscriptionStatus.ACTIVE,
    SubscriptionStatus.EXPIRED,
    SubscriptionStatus.FAILED,  # given up on: its archive entry waits for an operator
)


def _fresh_marker(kind: str, ident: uuid.UUID) -> bool:
    """Set the cooldown marker of ``kind`` for ``ident``; True unless one was already set."""
    cooldown_s = get_settings().renewal_request_cooldown_s
    try:
        return bool(get_redis().set(key(kind, str(ident)), 1, nx=True, ex=cooldown_s))
    except redis.RedisError as exc:
        # A duplicate request is harmless; a lost one is not: enqueue without the marker.
        record_metric(
            MetricType.SAFEGUARDS,
            "safeguard_unavailable",
            1.0,
            tags={"safeguard": "renewal_marker"},
        )
        log.warning("%s marker unavailable, enqueueing anyway: %s", kind, exc)
        return True


def request_renewal(subscription_id: uuid.UUID) -> bool:
    """Enqueue one renewal unless one was requested within the cooldown; True if enqueued."""
    fresh = _fresh_marker("subscription-renewal", subscription_id)
    if fresh:
        renew_subscription.delay(str(subscription_id))
    return fresh


def stores_without_subscription() -> list[uuid.UUID]:
    """Active, connected stores with no present subscription row (see the module docstring).

    One query. A store whose creation is archived and unreviewed is left to the operator, so a
    creation the provider keeps refusing is not archived again every pass.
    """
    present = exists().where(
        WebhookSubscription.store_id == Store.id, WebhookSubscription.status.in_(_PRESENT)
    )
    archived = exists().where(
        and_(
            FailedJobArchive.store_id == Store.id,
            FailedJobArchive.job_type == create_subscription.name,
            FailedJobArchive.reviewed.is_(False),
        )
    )
    stmt = select(Store.id).where(
        Store.status == StoreStatus.ACTIVE,
        Store.credentials_encrypted.is_not(None),
        ~present,
        ~archived,
    )
    with service_session() as session:
        return list(session.scalars(stmt))


def create_missing_subscriptions() -> list[str]:
    """Enqueue ``create_subscription`` for each store without one, once per cooldown each."""
    enqueued = []
    for store_id in stores_without_subscription():
        if _fresh_marker("subscription-create", store_id):
            create_subscription.delay(str(store_id))
            enqueued.append(str(store_id))
    if enqueued:
        log.warning("creating missing subscriptions of %d stores: %s", len(enqueued), enqueued)
        record_metric(MetricType.WEBHOOKS, "subscription_create_recovered", len(enqueued))
    return enqueued


@app.task(name="tasks.webhooks.renew_expiring_subscriptions")  # type: ignore[untyped-decorator]
def renew_expiring_subscriptions() -> list[str]:
    """Enqueue a renewal for every live subscription inside its renewal window (their ids), and
    a creation for every active, connected store without a subscription."""
    with service_session() as session:
        mark_expired(session)
        now = session.execute(select(func.now())).scalar_one()
        due = due_for_renewal(session, now)
    renewing = [str(sid) for sid in due if request_renewal(sid)]
    create_missing_subscriptions()
    return renewing


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
    "create_missing_subscriptions",
    "ensure_healthy_subscription",
    "renew_expiring_subscriptions",
    "request_renewal",
    "stores_without_subscription",
]
