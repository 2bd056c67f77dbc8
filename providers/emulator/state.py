"""In-memory mailboxes: messages, Gmail history, Graph delta sequence, tokens, subscriptions."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from providers.emulator.faults import Faults, MailboxStats

#: Gmail system labels; every other label is shown to Graph clients as a category.
SYSTEM_LABELS = frozenset(
    {"INBOX", "UNREAD", "STARRED", "IMPORTANT", "SENT", "DRAFT", "SPAM", "TRASH", "CHAT"}
)


class Provider(StrEnum):
    """Which API a mailbox speaks."""

    GMAIL = "gmail"
    OUTLOOK = "outlook"


class EmulatorError(Exception):
    """A control-API misuse (unknown mailbox, duplicate id)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Message:
    """One message; `labels` holds Gmail label ids, which are Graph categories too."""

    id: str
    thread_id: str
    labels: list[str]
    subject: str
    sender: str
    body: str
    folder: str
    received_ms: int
    history_id: int
    changed_seq: int

    def as_json(self) -> dict[str, object]:
        """The control API's view of the message."""
        return {
            "id": self.id,
            "thread_id": self.thread_id,
            "labels": list(self.labels),
            "subject": self.subject,
            "sender": self.sender,
            "folder": self.folder,
            "is_read": "UNREAD" not in self.labels,
            "received_ms": self.received_ms,
            "history_id": self.history_id,
        }


@dataclass(frozen=True)
class HistoryRecord:
    """One Gmail history entry: which message and what happened to it."""

    id: int
    message: dict[str, object]
    kind: str
    label_ids: tuple[str, ...] = ()


@dataclass
class Watch:
    """An active Gmail watch."""

    label_ids: list[str]
    behavior: str
    expiration_ms: int


@dataclass
class Subscription:
    """A Graph change-notification subscription."""

    id: str
    address: str
    resource: str
    change_types: list[str]
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expiration: datetime

    def as_json(self) -> dict[str, object]:
        """The subscription as Graph returns it."""
        return {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
            "id": self.id,
            "resource": self.resource,
            "changeType": ",".join(self.change_types),
            "notificationUrl": self.notification_url,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "clientState": self.client_state,
            "expirationDateTime": iso(self.expiration),
            "applicationId": "emulator-app",
        }


@dataclass
class Mailbox:
    """One mailbox with its credentials, messages and change tracking."""

    address: str
    provider: Provider
    client_id: str
    client_secret: str
    refresh_token: str
    history_id: int
    history_floor: int
    revoked: bool = False
    messages: dict[str, Message] = field(default_factory=dict)
    history: list[HistoryRecord] = field(default_factory=list)
    seq: int = 0
    tombstones: dict[str, int] = field(default_factory=dict)
    #: Delta sequence number -> the message it changed (added, relabelled or deleted), so a
    #: delta page reads only the changes after its cursor instead of the whole mailbox.
    changes: dict[int, str] = field(default_factory=dict)
    #: The last messages.list ordering, keyed by (seq, labelIds, includeSpamTrash): pages of one
    #: listing reuse it instead of sorting the whole mailbox per page.
    listing: dict[tuple[int, tuple[str, ...], bool], list[dict[str, str]]] = field(
        default_factory=dict
    )
    delta_epoch: int = 0
    watch: Watch | None = None
    faults: Faults = field(default_factory=Faults)
    stats: MailboxStats = field(default_factory=MailboxStats)


@dataclass(frozen=True)
class Change:
    """One mailbox change, handed to the notifier."""

    address: str
    change_type: str
    message_id: str
    labels: tuple[str, ...]
    history_id: int


def iso(moment: datetime) -> str:
    """Format a UTC datetime the way Graph does."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def encode_token(payload: dict[str, object]) -> str:
    """An opaque page/delta token."""
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def decode_token(token: str) -> dict[str, object] | None:
    """Decode an opaque token; None when it is not one of ours."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


class EmulatorState:
    """All emulator state behind one lock; every method is atomic."""

    def __init__(self, history_id_start: int = 1000) -> None:
        self.lock = threading.RLock()
        self.history_id_start = history_id_start
        self.mailboxes: dict[str, Mailbox] = {}
        self.access_tokens: dict[str, tuple[str, float]] = {}
        self.subscriptions: dict[str, Subscription] = {}

    def reset(self) -> None:
        """Forget every mailbox, token and subscription."""
        with self.lock:
            self.mailboxes.clear()
            self.access_tokens.clear()
            self.subscriptions.clear()

    def create_mailbox(self, address: str, provider: Provider) -> Mailbox:
        """Create a mailbox with fresh OAuth client credentials and grant."""
        with self.lock:
            if address in self.mailboxes:
                raise EmulatorError(409, f"mailbox {address} exists")
            box = Mailbox(
                address=address,
                provider=provider,
                client_id=f"client-{secrets.token_hex(8)}",
                client_secret=secrets.token_urlsafe(24),
                refresh_token=f"1//{secrets.token_urlsafe(32)}",
                history_id=self.history_id_start,
                history_floor=self.history_id_start,
            )
            self.mailboxes[address] = box
            return box

    def mailbox(self, address: str) -> Mailbox:
        """The mailbox, or EmulatorError 404."""
        with self.lock:
            box = self.mailboxes.get(address)
            if box is None:
                raise EmulatorError(404, f"no mailbox {address}")
            return box

    def _bump(self, box: Mailbox, message_id: str) -> tuple[int, int]:
        box.history_id += 1
        box.seq += 1
        box.changes[box.seq] = message_id
        return box.history_id, box.seq

    def add_message(self, address: str, message: Message) -> Change:
        """Add a message (id, thread id and counters are filled here)."""
        with self.lock:
            box = self.mailbox(address)
            if not message.id:
                message.id = (
                    secrets.token_hex(8)
                    if box.provider is Provider.GMAIL
                    else ("AAMk" + secrets.token_urlsafe(24))
                )
            if message.id in box.messages:
                raise EmulatorError(409, f"message {message.id} exists")
            message.thread_id = message.thread_id or message.id
            message.history_id, message.changed_seq = self._bump(box, message.id)
            box.messages[message.id] = message
            box.tombstones.pop(message.id, None)
            box.history.append(HistoryRecord(message.history_id, _ref(message), "messageAdded"))
            return Change(address, "created", message.id, tuple(message.labels), box.history_id)

    def delete_message(self, address: str, message_id: str) -> Change:
        """Delete a message for good."""
        with self.lock:
            box = self.mailbox(address)
            message = box.messages.pop(message_id, None)
            if message is None:
                raise EmulatorError(404, f"no message {message_id}")
            history_id, seq = self._bump(box, message_id)
            box.tombstones[message_id] = seq
            box.history.append(HistoryRecord(history_id, _ref(message), "messageDeleted"))
            return Change(address, "deleted", message_id, tuple(message.labels), history_id)

    def relabel(self, address: str, message_id: str, add: list[str], remove: list[str]) -> Change:
        """Add and remove labels (categories; UNREAD drives Graph isRead)."""
        with self.lock:
            box = self.mailbox(address)
            message = box.messages.get(message_id)
            if message is None:
                raise EmulatorError(404, f"no message {message_id}")
            added = [lb for lb in dict.fromkeys(add) if lb not in message.labels]
            removed = [lb for lb in dict.fromkeys(remove) if lb in message.labels]
            message.labels = [lb for lb in message.labels if lb not in removed] + added
            message.history_id, message.changed_seq = self._bump(box, message.id)
            ref = _ref(message)
            if added:
                box.history.append(HistoryRecord(box.history_id, ref, "labelAdded", tuple(added)))
            if removed:
                record = HistoryRecord(box.history_id, ref, "labelRemoved", tuple(removed))
                box.history.append(record)
            labels = tuple(dict.fromkeys([*message.labels, *removed]))
            return Change(address, "updated", message_id, labels, box.history_id)

    def expire_history(self, address: str) -> int:
        """Drop all retained history: any older startHistoryId now answers 404."""
        with self.lock:
            box = self.mailbox(address)
            box.history.clear()
            box.history_floor = box.history_id
            return box.history_floor

    def invalidate_delta(self, address: str) -> int:
        """Make every delta/skip token issued so far stale."""
        with self.lock:
            box = self.mailbox(address)
            box.delta_epoch += 1
            return box.delta_epoch

    def issue_access_token(self, address: str, lifetime_s: float) -> str:
        """A new opaque access token for the mailbox."""
        token = f"ya29.{secrets.token_urlsafe(32)}"
        with self.lock:
            self.access_tokens[token] = (address, time.time() + lifetime_s)
        return token

    def mailbox_for_token(self, token: str) -> Mailbox | None:
        """The mailbox a live, unrevoked access token belongs to."""
        with self.lock:
            entry = self.access_tokens.get(token)
            if entry is None or entry[1] <= time.time():
                return None
            box = self.mailboxes.get(entry[0])
            return None if box is None or box.revoked else box

    def expire_tokens(self, address: str) -> int:
        """Expire every access token of a mailbox; returns how many."""
        with self.lock:
            mine = [t for t, (a, _) in self.access_tokens.items() if a == address]
            for token in mine:
                self.access_tokens[token] = (address, 0.0)
            return len(mine)

    def subscriptions_of(self, address: str) -> list[Subscription]:
        """The mailbox's subscriptions, expired ones included."""
        with self.lock:
            return [s for s in self.subscriptions.values() if s.address == address]


def _ref(message: Message) -> dict[str, object]:
    return {"id": message.id, "threadId": message.thread_id, "labelIds": list(message.labels)}
