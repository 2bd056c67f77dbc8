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
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import redis
from sqlalchemy import and_, exists, func, select, text

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
from safeguards.webhook_health import CHUNK
from safeguards.webhook_health_sql import log_health_chunk
from syncguard.db import service_session
from syncguard.settings import get_settings
from tasks import app
from tasks.queues import MAINTENANCE
from tasks.subscriptions import current_health, due_for_renewal, mark_expired
from tasks.webhooks import create_subscription, renew_subscription

log = logging.getLogger(__name__)

#: The next chunk of live subscription ids after ``:after`` (keyset on the primary key).
_LIVE_AFTER = text(
    "SELECT id FROM webhook_subscriptions WHERE status IN ('active', 'expired') AND id > :after"
    " ORDER BY id LIMIT :limit"
)


#: Statuses of a row that stands for the store's subscription: nothing to create.
_PRESENT = (
    SubscriptionStatus.PENDING,
    SubscriptionStatus.ACTIVE,
    SubscriptionStatus.EXPIRED,
    SubscriptionStatus.FAILED,  # given up on: its archive entry waits for an operator
)


def _fresh_markers(kind: str, idents: Sequence[uuid.UUID]) -> list[bool]:
    """Set the cooldown marker of ``kind`` for each ident (one pipelined round trip); True for
    each that had none."""
    if not idents:
        return []
    cooldown_s = get_settings().renewal_request_cooldown_s
    try:
        pipe = get_redis().pipeline(transaction=False)
        for ident in idents:
            pipe.set(key(kind, str(ident)), 1, nx=True, ex=cooldown_s)
        return [bool(fresh) for fresh in pipe.execute()]
    except redis.RedisError as exc:
        # A duplicate request is harmless; a lost one is not: enqueue without the marker.
        record_metric(
            MetricType.SAFEGUARDS,
            "safeguard_unavailable",
            1.0,
            tags={"safeguard": "renewal_marker"},
        )
        log.warning("%s marker unavailable, enqueueing anyway: %s", kind, exc)
        return [True] * len(idents)


def request_renewals(subscription_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """Enqueue a renewal of each subscription not requested within the cooldown; those enqueued."""
    fresh = _fresh_markers("subscription-renewal", subscription_ids)
    enqueued = [sid for sid, ok in zip(subscription_ids, fresh, strict=True) if ok]
    for sid in enqueued:
        renew_subscription.delay(str(sid))
    return enqueued


def request_renewal(subscription_id: uuid.UUID) -> bool:
    """Enqueue one renewal unless one was requested within the cooldown; True if enqueued."""
    return bool(request_renewals([subscription_id]))


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
    missing = stores_without_subscription()
    fresh = _fresh_markers("subscription-create", missing)
    enqueued = [str(sid) for sid, ok in zip(missing, fresh, strict=True) if ok]
    for store_id in enqueued:
        create_subscription.delay(store_id)
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
    renewing = [str(sid) for sid in request_renewals(due)]
    create_missing_subscriptions()
    return renewing


@app.task(name="tasks.webhooks.check_subscription_health")  # type: ignore[untyped-decorator]
def check_subscription_health() -> dict[str, Any]:
    """Fan every live subscription's health check out to workers in id ranges of ``CHUNK``.

    Marks expired rows, reads the database's time once (every reading of the run is stamped
    with it), lists the live subscriptions' ids by keyset (one SELECT per chunk) and sends one
    ``check_subscription_health_chunk`` per range to the maintenance queue. Returns
    ``{"subscriptions": live ones found, "chunks": [the chunk tasks' ids]}``.
    """
    with service_session() as session:
        mark_expired(session)
        now = session.execute(select(func.now())).scalar_one()
    chunks: list[str] = []
    found, after = 0, uuid.UUID(int=0)
    while True:
        with service_session() as session:
            ids = list(session.scalars(_LIVE_AFTER, {"after": after, "limit": CHUNK}))
        if ids:
            found += len(ids)
            sent = check_subscription_health_chunk.apply_async(
                args=[now.isoformat(), str(after), str(ids[-1])], queue=MAINTENANCE
            )
            chunks.append(sent.id)
        if len(ids) < CHUNK:
            return {"subscriptions": found, "chunks": chunks}
        after = ids[-1]


@app.task(name="tasks.webhooks.check_subscription_health_chunk")  # type: ignore[untyped-decorator]
def check_subscription_health_chunk(now: str, after: str, last: str) -> dict[str, int]:
    """Log the health of the live subscriptions with ``after < id <= last`` as of ``now`` (ISO
    8601, the run's database time): one statement reads, scores (in SQL) and logs them and
    returns those below ``health_renew_below``, which are renewed. Returns subscriptions checked
    and renewals enqueued."""
    with service_session() as session:
        outcome = log_health_chunk(
            session, datetime.fromisoformat(now), after=uuid.UUID(after), last=uuid.UUID(last)
        )
    return {"checked": outcome.checked, "renewing": len(request_renewals(outcome.unhealthy))}


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
    "check_subscription_health_chunk",
    "create_missing_subscriptions",
    "ensure_healthy_subscription",
    "renew_expiring_subscriptions",
    "request_renewal",
    "request_renewals",
    "stores_without_subscription",
]
