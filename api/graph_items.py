"""Judging the items of a Graph notification body: whose subscription, authentic, what to do.

Every item Graph can never have us process becomes an ``Ignored`` verdict (acknowledged with the
rest of the body, see ``api.outlook``); only an item whose clientState matches a subscription we
hold is *verified*, and only verified items are written to the delivery log.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from api.intake import clean_id
from api.lookups import SubscriptionRef
from api.outcomes import Ignored, IgnoreReason

NOTIFICATION_TYPE = "outlook_notification"
LIFECYCLE_TYPE = "outlook_lifecycle"


class LifecycleEvent(enum.StrEnum):
    REAUTHORIZATION_REQUIRED = "reauthorizationRequired"
    SUBSCRIPTION_REMOVED = "subscriptionRemoved"
    MISSED = "missed"


@dataclass(frozen=True)
class Verdict:
    """One item judged: subscription id, kind, verified subscription, and why ignored (if so).

    ``subscription`` is set only when the item's clientState matched it (the item is verified).
    """

    subscription_id: str | None
    webhook_type: str
    subscription: SubscriptionRef | None = None
    lifecycle_event: LifecycleEvent | None = None
    ignored: Ignored | None = None

    @property
    def store_id(self) -> uuid.UUID | None:
        """The store the item is about, when its subscription is known."""
        return None if self.subscription is None else self.subscription.store.id


def parse_items(body: Any) -> list[Any]:
    """The ``value`` list of a Graph notification body; Ignored (malformed) when there is none."""
    items = body.get("value") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise Ignored(IgnoreReason.MALFORMED, "body lacks a value array")
    if not items:
        raise Ignored(IgnoreReason.MALFORMED, "value array is empty")
    return items


def subscription_ids(items: list[Any]) -> set[str]:
    """The well-formed subscription ids the items name."""
    ids = (clean_id(item.get("subscriptionId")) for item in items if isinstance(item, dict))
    return {i for i in ids if i is not None}


def judge(item: Any, subscriptions: Mapping[str, SubscriptionRef], lifecycle_url: bool) -> Verdict:
    """The verdict on one item; ``lifecycle_url`` says the item came to the lifecycle URL."""
    raw = item if isinstance(item, dict) else {}
    sub_id = clean_id(raw.get("subscriptionId"))
    # The payload says what it is: an item with lifecycleEvent is one wherever it arrives.
    kind = LIFECYCLE_TYPE if "lifecycleEvent" in raw or lifecycle_url else NOTIFICATION_TYPE
    if not isinstance(item, dict):
        return Verdict(None, kind, ignored=Ignored(IgnoreReason.MALFORMED, "item is not an object"))
    if sub_id is None:
        detail = "item lacks a subscriptionId"
        return Verdict(None, kind, ignored=Ignored(IgnoreReason.MALFORMED, detail))
    subscription = subscriptions.get(sub_id)
    if subscription is None or not client_state_matches(
        raw.get("clientState"), subscription.client_state_hash
    ):
        detail = "unknown subscription" if subscription is None else "clientState does not match"
        return Verdict(sub_id, kind, ignored=Ignored(IgnoreReason.UNVERIFIED, detail))
    return _judge_verified(raw, sub_id, kind, subscription)


def _judge_verified(
    raw: dict[str, Any], sub_id: str, kind: str, subscription: SubscriptionRef
) -> Verdict:
    """The verdict on an item whose clientState matched ``subscription``."""
    event: LifecycleEvent | None = None
    if kind == LIFECYCLE_TYPE:
        try:
            event = LifecycleEvent(str(raw.get("lifecycleEvent")))
        except ValueError:
            detail = "unknown or missing lifecycleEvent"
            unknown = Ignored(IgnoreReason.UNKNOWN_EVENT, detail, store_id=subscription.store.id)
            return Verdict(sub_id, kind, subscription, ignored=unknown)
    store = subscription.store
    if event in (None, LifecycleEvent.MISSED) and not store.syncable:
        # Subscription upkeep (reauthorize, recreate) goes on; only syncs wait for the store.
        detail = f"store is {store.status.value}"
        inactive = Ignored(IgnoreReason.STORE_INACTIVE, detail, store_id=store.id)
        return Verdict(sub_id, kind, subscription, event, ignored=inactive)
    return Verdict(sub_id, kind, subscription, lifecycle_event=event)


def client_state_matches(client_state: object, expected_hash: str | None) -> bool:
    """Whether sha256(clientState) equals the stored hash, compared in constant time."""
    if not isinstance(client_state, str) or not expected_hash:
        return False
    digest = hashlib.sha256(client_state.encode("utf-8", "surrogatepass")).hexdigest()
    return hmac.compare_digest(digest.encode(), expected_hash.strip().lower().encode("utf-8"))
