"""The protocol both mail adapters implement, their typed results, and the guard hook."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Protocol

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


@dataclass(frozen=True)
class ChangesPage:
    """One page of incremental changes since a cursor; ``cursor`` is set only on the last page."""

    upserts: list[RemoteMessage]
    deleted_ids: list[str]
    #: Label-only changes, in order; messages also upserted or deleted here are left out.
    label_changes: list[LabelChange] = field(default_factory=list)
    next_page_token: str | None = None
    cursor: str | None = None


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
