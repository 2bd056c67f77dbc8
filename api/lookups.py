"""The few queries the receivers make: whose mailbox, which subscription, when last heard from."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ARRAY,
    Connection,
    String,
    Update,
    Uuid,
    any_,
    bindparam,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.orm import Session

from models import (
    Provider,
    Store,
    StoreStatus,
    SubscriptionStatus,
    WebhookDeliveryLog,
    WebhookSubscription,
)


@dataclass(frozen=True)
class StoreRef:
    """The store a notification is about."""

    id: uuid.UUID
    status: StoreStatus

    @property
    def syncable(self) -> bool:
        """Whether a notification should start a sync (paused or broken stores wait)."""
        return self.status is StoreStatus.ACTIVE


@dataclass(frozen=True)
class SubscriptionRef:
    """A Graph subscription as a notification needs it: its row, store and clientState hash."""

    id: uuid.UUID
    store: StoreRef
    client_state_hash: str | None


# Built once, with named binds: building a select for every notification cost a measurable
# share of the receiver's CPU (py-spy); each call passes only its values. A list is one array
# bind (``= ANY(:ids)``), not an expanding IN: that was rendered anew for every execution
# (SQLAlchemy's post-compile step, ~4 % of the Graph receiver's CPU samples) and its text
# changed with the list's length.
_IDS = ARRAY(String)
_ROW_IDS = ARRAY(Uuid)
_GMAIL_STORE = (
    select(Store.id, Store.status)
    .where(Store.provider == Provider.GMAIL)
    .where(func.lower(Store.mailbox_address) == bindparam("address"))
    .order_by(Store.created_at)
    .limit(1)
)
_OUTLOOK_SUBSCRIPTIONS = (
    select(
        WebhookSubscription.id,
        WebhookSubscription.provider_subscription_id,
        WebhookSubscription.client_state_hash,
        Store.id.label("store_id"),
        Store.status,
    )
    .join(Store, Store.id == WebhookSubscription.store_id)
    .where(WebhookSubscription.provider == Provider.OUTLOOK)
    .where(WebhookSubscription.provider_subscription_id == any_(bindparam("ids", type_=_IDS)))
)


def gmail_store(session: Session | Connection, address: str) -> StoreRef | None:
    """The Gmail store of ``address``, compared case-insensitively."""
    row = session.execute(_GMAIL_STORE, {"address": address.lower()}).first()
    return None if row is None else StoreRef(row.id, StoreStatus(row.status))


def outlook_subscriptions(
    session: Session | Connection, subscription_ids: Collection[str]
) -> dict[str, SubscriptionRef]:
    """The Graph subscriptions among ``subscription_ids``, by Graph subscription id.

    On a Connection the select skips the ORM's execution layer (it reads plain columns).
    """
    if not subscription_ids:
        return {}
    rows = session.execute(_OUTLOOK_SUBSCRIPTIONS, {"ids": list(subscription_ids)}).all()
    return {
        row.provider_subscription_id: SubscriptionRef(
            row.id, StoreRef(row.store_id, StoreStatus(row.status)), row.client_state_hash
        )
        for row in rows
    }


@dataclass(frozen=True)
class Touch:
    """An UPDATE recording that subscriptions just delivered a notification, and its values.

    ``statement`` is one of the module's constants (named binds), so a statement embedding it
    can be built once and reused (api.receipt).
    """

    statement: Update
    params: dict[str, Any]


_GMAIL_WATCH_TOUCH = (
    update(WebhookSubscription)
    .where(WebhookSubscription.store_id == bindparam("touch_store_id"))
    .where(WebhookSubscription.provider == Provider.GMAIL)
    .where(WebhookSubscription.status != SubscriptionStatus.REMOVED)
    .values(last_notification_at=func.now())
)
_SUBSCRIPTIONS_TOUCH = (
    update(WebhookSubscription)
    .where(WebhookSubscription.id == any_(bindparam("touch_ids", type_=_ROW_IDS)))
    .values(last_notification_at=func.now())
)


def gmail_watch_touch(store_id: uuid.UUID) -> Touch:
    """The touch of the store's Gmail watch (any state but removed)."""
    return Touch(_GMAIL_WATCH_TOUCH, {"touch_store_id": store_id})


def subscriptions_touch(row_ids: Collection[uuid.UUID]) -> Touch:
    """The touch of these subscriptions (by row id)."""
    return Touch(_SUBSCRIPTIONS_TOUCH, {"touch_ids": list(row_ids)})


def forget_deliveries(session: Session, row_ids: Collection[uuid.UUID]) -> None:
    """Delete delivery-log rows written in a transaction whose work could not be published."""
    if row_ids:
        session.execute(delete(WebhookDeliveryLog).where(WebhookDeliveryLog.id.in_(list(row_ids))))
