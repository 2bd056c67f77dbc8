"""The protocol both mail adapters implement, their typed results, and the guard hook."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

from providers.errors import ProviderPayloadError

_T = TypeVar("_T")

#: What a parser raises on a value of the wrong shape (a date that is no date, a huge number).
UNREADABLE_ERRORS = (TypeError, ValueError, OverflowError, OSError)

#: Wraps one HTTP request: ``call_guard(operation, cost)`` is entered around each request.
CallGuard = Callable[[str, int], AbstractContextManager[None]]

#: The guard-hook operation of a token refresh; it costs no provider quota.
TOKEN_REFRESH = "oauth.token"


def no_guard(operation: str, cost: int) -> AbstractContextManager[None]:
    """The default guard: does nothing."""
    return nullcontext()


def resolve_costs(
    defaults: Mapping[str, int], overrides: Mapping[str, int] | None
) -> Mapping[str, int]:
    """The defaults with ``overrides`` applied; an unknown operation is an error, not ignored."""
    unknown = set(overrides or {}) - set(defaults)
    if unknown:
        known = sorted(defaults)
        raise ValueError(f"unknown operations in costs: {sorted(unknown)}; known: {known}")
    return MappingProxyType({**defaults, **(overrides or {})})


def parse_datetime(value: str | None) -> datetime | None:
    """An ISO 8601 timestamp as an aware UTC datetime (None stays None)."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def from_epoch_ms(value: str | int | None) -> datetime | None:
    """Milliseconds since the epoch (Gmail's ``internalDate``, ``expiration``) as UTC."""
    return None if value in (None, "") else datetime.fromtimestamp(int(value) / 1000, tz=UTC)


def lenient(parse: Callable[[Any], _T], value: Any, name: str, unreadable: list[str]) -> _T | None:
    """``parse(value)``; None, with ``name`` added to ``unreadable``, when the provider's value
    has a shape ``parse`` cannot read. One bad optional field must not fail its whole page."""
    try:
        return parse(value)
    except UNREADABLE_ERRORS:
        unreadable.append(name)
        return None


def optional_text(value: Any) -> str | None:
    """A provider's optional text field: a string or None; anything else is unreadable."""
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"expected text, got {type(value).__name__}")


def text_items(values: Any, name: str, unreadable: list[str]) -> tuple[str, ...]:
    """The strings of a provider's list field (labels, categories); other items are dropped
    and ``name`` added to ``unreadable``."""
    if values is None:
        return ()
    if not isinstance(values, list | tuple):
        unreadable.append(name)
        return ()
    kept = tuple(item for item in values if isinstance(item, str))
    if len(kept) != len(values):
        unreadable.append(name)
    return kept


@dataclass(frozen=True)
class RemoteMessage:
    """One message as the provider lists it (metadata only)."""

    provider_message_id: str
    thread_id: str | None
    labels: tuple[str, ...]
    subject: str | None
    sender: str | None
    received_at: datetime | None
    #: None where the provider does not say (Graph).
    size_bytes: int | None
    #: Gmail ``historyId`` of the message, Graph ``changeKey``: changes when the message does.
    version: str | None
    #: Fields the provider sent in a shape the adapter could not read, left empty (or partial).
    unreadable: tuple[str, ...] = ()


@dataclass(frozen=True)
class UnreadableItem:
    """One item of a page that cannot be synced on its own: the provider refused to serve it
    (a Gmail 400 on its ``messages.get``) or served it without a required field. The sync sets
    it aside (archived, counted, logged) and the rest of its page commits."""

    #: The item's id when it has a usable one; else a stable digest of the item (``unread:...``).
    provider_message_id: str
    #: Short kind, a metric label: ``ProviderPayloadError``, ``ProviderRequestError 400``...
    error: str
    #: What was wrong, for operators (never the item's contents).
    reason: str


def unreadable_item(item: Any, error: str, reason: str) -> UnreadableItem:
    """An UnreadableItem for a raw page item: its id when readable, else a digest of it."""
    raw = item.get("id") if isinstance(item, Mapping) else None
    if isinstance(raw, str) and raw:
        return UnreadableItem(raw, error, reason)
    text = json.dumps(item, sort_keys=True, default=str).encode("utf-8", "surrogatepass")
    return UnreadableItem(f"unread:{hashlib.sha256(text).hexdigest()[:32]}", error, reason)


def required_id(value: Any, provider: str, what: str) -> str:
    """A required id field (``id``, ``message.id``): a non-empty string or an int.

    Raises ProviderPayloadError otherwise (missing, null, a list...)."""
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        kind = "missing" if value is None else f"a {type(value).__name__}"
        raise ProviderPayloadError(f"{what}: required id is {kind}", provider=provider)
    return str(value)


@dataclass(frozen=True)
class LabelChange:
    """Labels added to and removed from one message (Gmail history only)."""

    provider_message_id: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


@dataclass(frozen=True)
class FullPage:
    """One page of a full listing; ``cursor`` is set only on the last page."""

    messages: list[RemoteMessage]
    #: Opaque token for the next page; None when the listing is complete.
    next_page_token: str | None
    #: Where incremental sync starts after this listing (historyId, deltaLink); last page only.
    cursor: str | None
    #: Items of this page that cannot be synced; set aside while the page commits.
    unreadable: list[UnreadableItem] = field(default_factory=list)


@dataclass(frozen=True)
class ChangesPage:
    """One page of incremental changes since a cursor; ``cursor`` is set only on the last page."""

    upserts: list[RemoteMessage]
    deleted_ids: list[str]
    #: Label-only changes, in order; messages also upserted or deleted here are left out.
    label_changes: list[LabelChange] = field(default_factory=list)
    next_page_token: str | None = None
    cursor: str | None = None
    #: Items of this page that cannot be synced; set aside while the page commits.
    unreadable: list[UnreadableItem] = field(default_factory=list)


@dataclass(frozen=True)
class Subscription:
    """A push channel: a Gmail watch or a Graph subscription."""

    provider: str
    #: Graph's subscription id; None for a Gmail watch, which has none.
    subscription_id: str | None
    #: Gmail: the Pub/Sub topic; Graph: the subscribed resource path.
    resource: str
    expires_at: datetime
    #: Gmail: the mailbox historyId when the watch started; None for Graph.
    history_id: str | None = None


class MailProvider(Protocol):
    """What the sync tasks need from any mailbox: full listing, incremental changes, close."""

    #: "gmail" or "outlook".
    provider: str

    def list_page(self, page_token: str | None = None) -> FullPage:
        """One page of the full listing; pass back ``next_page_token`` until ``cursor`` is set."""
        ...

    def changes_page(self, cursor: str, page_token: str | None = None) -> ChangesPage:
        """One page of changes since ``cursor``; raises CursorExpired when it is too old."""
        ...

    def close(self) -> None:
        """Release the HTTP connections."""
        ...
