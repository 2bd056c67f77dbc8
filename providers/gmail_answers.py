"""Reading Gmail's answers: its errors mapped onto the providers' family, its message and
history payloads onto ``RemoteMessage`` and history changes (Gmail API reference, ``Message``,
``History`` and "Handle errors"). No HTTP here: ``providers.gmail`` makes the calls."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from providers.base import (
    LabelChange,
    RemoteMessage,
    UnreadableItem,
    from_epoch_ms,
    lenient,
    optional_text,
    required_id,
    text_items,
    unreadable_item,
)
from providers.errors import (
    CursorExpired,
    ProviderError,
    ProviderPayloadError,
    ProviderRequestError,
    ProviderThrottled,
    ProviderUnavailable,
    error_body,
    error_code,
    error_message,
    payload_errors,
)

__all__ = [
    "PROVIDER",
    "THROTTLE_REASONS",
    "HistoryChanges",
    "classify",
    "parse_message",
    "read_history",
    "ref_id",
]

PROVIDER = "gmail"
#: 403 reasons that mean "slow down", not "forbidden".
THROTTLE_REASONS = frozenset({"userRateLimitExceeded", "rateLimitExceeded", "dailyLimitExceeded"})


def _reasons(response: httpx.Response) -> list[str]:
    error = error_body(response).get("error")
    errors = error.get("errors") if isinstance(error, dict) else None
    if not isinstance(errors, list):
        return []
    return [str(e["reason"]) for e in errors if isinstance(e, dict) and "reason" in e]


def classify(operation: str, response: httpx.Response) -> ProviderError:
    """Map a non-2xx Gmail answer onto the providers' error family.

    Retry-After is not read here: ``OAuthSession`` puts it on whatever error this returns.
    """
    status, reasons = response.status_code, _reasons(response)
    code = reasons[0] if reasons else error_code(response)
    message = f"{operation}: {error_message(response)}"
    throttle_reason = next((r for r in reasons if r in THROTTLE_REASONS), None)
    if status == 429 or (status == 403 and throttle_reason):
        return ProviderThrottled(
            message, provider=PROVIDER, status=status, code=throttle_reason or code
        )
    if status == 404 and operation == "history.list":
        return CursorExpired(message, provider=PROVIDER, status=status, code=code)
    if status >= 500 or status == 408:
        return ProviderUnavailable(message, provider=PROVIDER, status=status, code=code)
    return ProviderRequestError(message, provider=PROVIDER, status=status, code=code)


def _header(payload: Any, name: str) -> Any:
    headers = payload.get("headers") if isinstance(payload, Mapping) else None
    for header in headers if isinstance(headers, list) else []:
        if isinstance(header, Mapping) and str(header.get("name", "")).lower() == name.lower():
            return header.get("value")
    return None


def _size(value: Any) -> int | None:
    return None if value is None else int(value)


def parse_message(body: Mapping[str, Any]) -> RemoteMessage:
    """A ``messages.get`` (format=metadata) answer as a RemoteMessage.

    Raises ProviderPayloadError without a usable ``id``; any other field Gmail sends in a
    shape we cannot read is left empty and named in ``unreadable`` (one odd message must not
    fail its page).
    """
    message_id = required_id(body.get("id"), PROVIDER, "messages.get")
    unreadable: list[str] = []
    thread_id = lenient(optional_text, body.get("threadId"), "thread_id", unreadable)
    labels = text_items(body.get("labelIds"), "labels", unreadable)
    subject = lenient(optional_text, _header(body.get("payload"), "Subject"), "subject", unreadable)
    sender = lenient(optional_text, _header(body.get("payload"), "From"), "sender", unreadable)
    received_at = lenient(from_epoch_ms, body.get("internalDate"), "received_at", unreadable)
    size = lenient(_size, body.get("sizeEstimate"), "size_bytes", unreadable)
    return RemoteMessage(
        provider_message_id=message_id,
        thread_id=thread_id,
        labels=labels,
        subject=subject,
        sender=sender,
        received_at=received_at,
        size_bytes=size,
        version=str(body["historyId"]) if body.get("historyId") is not None else None,
        unreadable=tuple(unreadable),
    )


def ref_id(ref: Any, unreadable: list[UnreadableItem]) -> str | None:
    """The id of a ``messages.list`` entry; None, the entry set aside, when it has none."""
    try:
        return required_id(ref.get("id") if isinstance(ref, Mapping) else None, PROVIDER, "ref")
    except ProviderPayloadError as exc:
        unreadable.append(unreadable_item(ref, type(exc).__name__, f"messages.list: {exc}"))
        return None


@dataclass
class HistoryChanges:
    """What one ``history.list`` page says changed, each message once (its last change wins).

    ``added`` still needs a ``messages.get`` each; ``cursor`` (the new historyId) is set on the
    last page only, when ``next_page_token`` is None.
    """

    added: dict[str, None] = field(default_factory=dict)
    deleted: dict[str, None] = field(default_factory=dict)
    label_changes: list[LabelChange] = field(default_factory=list)
    unreadable: list[UnreadableItem] = field(default_factory=list)
    next_page_token: str | None = None
    cursor: str | None = None


def read_history(body: Mapping[str, Any]) -> HistoryChanges:
    """A ``history.list`` answer read record by record; items without an id are set aside.
    Raises ProviderPayloadError when the page itself has no usable shape."""
    changes = HistoryChanges()
    with payload_errors(PROVIDER, "history.list"):
        for record in body.get("history") or []:
            for message_id in _history_ids(record, "messagesAdded", changes.unreadable):
                changes.added[message_id] = None
                changes.deleted.pop(message_id, None)
            for message_id in _history_ids(record, "messagesDeleted", changes.unreadable):
                changes.deleted[message_id] = None
                changes.added.pop(message_id, None)
            changes.label_changes += _label_changes(record, changes.unreadable)
        changes.next_page_token = optional_text(body.get("nextPageToken"))
        if not changes.next_page_token:
            changes.cursor = required_id(body.get("historyId"), PROVIDER, "historyId")
    return changes


def _history_ids(record: Any, kind: str, unreadable: list[UnreadableItem]) -> list[str]:
    """The message ids of one kind of a history record; items without one are set aside."""
    ids = []
    for item in record.get(kind) or []:
        message = item.get("message") if isinstance(item, Mapping) else None
        raw = message.get("id") if isinstance(message, Mapping) else None
        try:
            ids.append(required_id(raw, PROVIDER, f"history.list {kind}"))
        except ProviderPayloadError as exc:
            unreadable.append(unreadable_item(item, type(exc).__name__, str(exc)))
    return ids


def _label_changes(record: Any, unreadable: list[UnreadableItem]) -> list[LabelChange]:
    """The label-only changes of one history record, in order; odd label lists kept partial."""
    changes = []
    for kind in ("labelsAdded", "labelsRemoved"):
        for item in record.get(kind) or []:
            for message_id in _history_ids({kind: [item]}, kind, unreadable):
                labels = text_items(item.get("labelIds"), "labels", [])
                added, removed = (labels, ()) if kind == "labelsAdded" else ((), labels)
                changes.append(LabelChange(message_id, added=added, removed=removed))
    return changes
