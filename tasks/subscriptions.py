"""Bookkeeping of ``webhook_subscriptions`` rows: what the webhook tasks read and write.

No provider calls and no Celery here: the tasks in ``tasks.webhooks`` call the providers and use
these functions to record what happened and to choose what to renew.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.orm import Session

from models import Provider, Store, SubscriptionStatus, WebhookHealthLog, WebhookSubscription
from providers.base import Subscription
from safeguards.errors import ValidationFailure
from safeguards.redaction import redact_text, truncate
from safeguards.storable import storable_optional, storable_text
from syncguard.db import service_session
from syncguard.settings import Settings, get_settings

#: Statuses of a subscription that should be kept alive (renewed when due).
LIVE = (SubscriptionStatus.ACTIVE, SubscriptionStatus.EXPIRED)
#: Longest renewal error kept on the row, characters.
MAX_ERROR_CHARS = 2_000
#: Width of ``webhook_subscriptions.provider_subscription_id``, characters.
ID_CHARS = 255


@dataclass(frozen=True)
class Replaced:
    """A subscription a new one replaced: its Graph id still needs deleting at the provider."""

    id: uuid.UUID
    provider_subscription_id: str | None


def client_state_hash(client_state: str) -> str:
    """SHA-256 hex of a clientState: what we store and what a notification is checked against."""
    return hashlib.sha256(client_state.encode()).hexdigest()


@lru_cache(maxsize=4096)
def subscription_store(subscription_id: uuid.UUID) -> uuid.UUID:
    """The store of a subscription; cached in process because it never changes."""
    with service_session() as session:
        store_id = session.scalar(
            select(WebhookSubscription.store_id).where(WebhookSubscription.id == subscription_id)
        )
    if store_id is None:
        raise ValidationFailure(f"webhook subscription {subscription_id} does not exist")
    return store_id


def load_subscription(subscription_id: uuid.UUID) -> WebhookSubscription:
    """A detached copy of the row (raises ValidationFailure when it is gone)."""
    with service_session() as session:
        sub = session.get(WebhookSubscription, subscription_id)
        if sub is None:
            raise ValidationFailure(f"webhook subscription {subscription_id} does not exist")
        return sub


def save_created(
    store_id: uuid.UUID, created: Subscription, state_hash: str | None
) -> tuple[uuid.UUID, list[Replaced]]:
    """Insert the store's new active row and retire the live ones it replaces, atomically."""
    with service_session() as session:
        # Serialises two creations for one store, so one active row remains.
        session.execute(select(Store.id).where(Store.id == store_id).with_for_update())
        retired = session.execute(
            update(WebhookSubscription)
            .where(
                WebhookSubscription.store_id == store_id,
                WebhookSubscription.status.in_(
                    (*LIVE, SubscriptionStatus.PENDING, SubscriptionStatus.FAILED)
                ),
            )
            .values(status=SubscriptionStatus.REMOVED)
            .returning(WebhookSubscription.id, WebhookSubscription.provider_subscription_id)
        ).all()
        new_id: uuid.UUID = session.execute(
            insert(WebhookSubscription)
            .values(
                store_id=store_id,
                provider=Provider(created.provider),
                provider_subscription_id=storable_optional(created.subscription_id, ID_CHARS),
                resource=storable_text(created.resource),
                expires_at=created.expires_at,
                client_state_hash=state_hash,
                status=SubscriptionStatus.ACTIVE,
            )
            .returning(WebhookSubscription.id)
        ).scalar_one()
    return new_id, [Replaced(row.id, row.provider_subscription_id) for row in retired]


def record_renewal(subscription_id: uuid.UUID, expires_at: datetime | None) -> None:
    """A successful renewal: new expiry, one more renewal, failures cleared."""
    values: dict[str, object] = {
        "renewal_count": WebhookSubscription.renewal_count + 1,
        "last_renewed_at": func.now(),
        "consecutive_renewal_failures": 0,
        "last_renewal_error": None,
        "status": SubscriptionStatus.ACTIVE,
    }
    if expires_at is not None:
        values["expires_at"] = expires_at
    _update(subscription_id, values)


def record_renewal_failure(subscription_id: uuid.UUID, exc: BaseException) -> None:
    """One more failed renewal attempt, with its (redacted) error."""
    error = storable_text(truncate(redact_text(f"{type(exc).__name__}: {exc}"), MAX_ERROR_CHARS))
    _update(
        subscription_id,
        {
            "consecutive_renewal_failures": WebhookSubscription.consecutive_renewal_failures + 1,
            "last_renewal_error": error,
        },
    )


def set_status(subscription_id: uuid.UUID, status: SubscriptionStatus) -> None:
    """Move a subscription to ``status``."""
    _update(subscription_id, {"status": status})


def _update(subscription_id: uuid.UUID, values: dict[str, object]) -> None:
    with service_session() as session:
        session.execute(
            update(WebhookSubscription)
            .where(WebhookSubscription.id == subscription_id)
            .values(**values)
        )


def mark_expired(session: Session) -> int:
    """Active rows whose expiry has passed become expired; returns how many."""
    result = session.execute(
        update(WebhookSubscription)
        .where(
            WebhookSubscription.status == SubscriptionStatus.ACTIVE,
            WebhookSubscription.expires_at <= func.now(),
        )
        .values(status=SubscriptionStatus.EXPIRED)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def due_for_renewal(
    session: Session, now: datetime, settings: Settings | None = None
) -> list[uuid.UUID]:
    """Live subscriptions inside their renewal window (expired ones included)."""
    s = settings or get_settings()
    sub = WebhookSubscription
    gmail = and_(
        sub.provider == Provider.GMAIL,
        or_(
            func.coalesce(sub.last_renewed_at, sub.created_at)
            <= now - timedelta(seconds=s.gmail_watch_renew_after_s),
            sub.expires_at <= now + timedelta(seconds=s.gmail_watch_renew_before_s),
        ),
    )
    graph = and_(
        sub.provider == Provider.OUTLOOK,
        sub.expires_at <= now + timedelta(seconds=s.graph_renew_before_s),
    )
    stmt = (
        select(sub.id)
        .where(sub.status.in_(LIVE), or_(sub.expires_at.is_(None), gmail, graph))
        .order_by(sub.expires_at.asc().nulls_first())
    )
    return list(session.scalars(stmt))


def live_subscription_ids(session: Session) -> list[uuid.UUID]:
    """Every subscription that should be kept alive (status active or expired)."""
    stmt = select(WebhookSubscription.id).where(WebhookSubscription.status.in_(LIVE))
    return list(session.scalars(stmt))


@dataclass(frozen=True)
class CurrentHealth:
    """A store's live subscription as a sync sees it: expiry, status and latest score."""

    subscription_id: uuid.UUID
    status: SubscriptionStatus
    seconds_to_expiry: float | None
    health_score: float | None


def current_health(session: Session, store_id: uuid.UUID) -> CurrentHealth | None:
    """The store's newest live subscription with its latest health score, in one query."""
    sub = WebhookSubscription
    latest = (
        select(WebhookHealthLog.health_score)
        .where(WebhookHealthLog.subscription_id == sub.id)
        .order_by(WebhookHealthLog.checked_at.desc())
        .limit(1)
        .correlate(sub)
        .scalar_subquery()
    )
    row = session.execute(
        select(
            sub.id,
            sub.status,
            func.extract("epoch", sub.expires_at - func.now()),
            latest,
        )
        .where(sub.store_id == store_id, sub.status.in_(LIVE))
        .order_by(sub.created_at.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    seconds = None if row[2] is None else float(row[2])
    score = None if row[3] is None else float(row[3])
    return CurrentHealth(row[0], SubscriptionStatus(row[1]), seconds, score)
