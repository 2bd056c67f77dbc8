"""Judging the items of a Graph notification body: whose subscription, authentic, what to do."""

from __future__ import annotations

import enum
import hashlib
import hmac
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from api.errors import Rejected
from api.intake import clean_id
from api.lookups import SubscriptionRef

NOTIFICATION_TYPE = "outlook_notification"
LIFECYCLE_TYPE = "outlook_lifecycle"


class LifecycleEvent(enum.StrEnum):
    REAUTHORIZATION_REQUIRED = "reauthorizationRequired"
    SUBSCRIPTION_REMOVED = "subscriptionRemoved"
    MISSED = "missed"


@dataclass(frozen=True)
class Verdict:
    """One item judged: its subscription id, kind, subscription row and refusal (if refused)."""

    subscription_id: str | None
    webhook_type: str
    subscription: SubscriptionRef | None = None
    lifecycle_event: LifecycleEvent | None = None
    rejection: Rejected | None = None

    @property
    def store_id(self) -> uuid.UUID | None:
        """The store the item is about, when its subscription is known."""
        return None if self.subscription is None else self.subscription.store.id


def parse_items(body: Any) -> list[Any]:
    """The ``value`` list of a Graph notification body, or a 400."""
    items = body.get("value") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise Rejected(400, "body lacks a value array")
    if not items:
        raise Rejected(400, "value array is empty")
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
        return Verdict(None, kind, rejection=Rejected(400, "item is not an object"))
    if sub_id is None:
        return Verdict(None, kind, rejection=Rejected(400, "item lacks a subscriptionId"))
    subscription = subscriptions.get(sub_id)
    if subscription is None:
        return Verdict(sub_id, kind, rejection=Rejected(404, "unknown subscription"))
    if not client_state_matches(raw.get("clientState"), subscription.client_state_hash):
        refused = Rejected(403, "clientState does not match")
        return Verdict(sub_id, kind, subscription, rejection=refused)
    if kind == NOTIFICATION_TYPE:
        return Verdict(sub_id, kind, subscription)
    try:
        event = LifecycleEvent(str(raw.get("lifecycleEvent")))
    except ValueError:
        refused = Rejected(400, "unknown or missing lifecycleEvent")
        return Verdict(sub_id, kind, subscription, rejection=refused)
    return Verdict(sub_id, kind, subscription, lifecycle_event=event)


def client_state_matches(client_state: object, expected_hash: str | None) -> bool:
    """Whether sha256(clientState) equals the stored hash, compared in constant time."""
    if not isinstance(client_state, str) or not expected_hash:
        return False
    digest = hashlib.sha256(client_state.encode("utf-8", "surrogatepass")).hexdigest()
    return hmac.compare_digest(digest.encode(), expected_hash.strip().lower().encode("utf-8"))
