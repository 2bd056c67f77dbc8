"""The local copy of a mailbox: idempotent bulk writes of one provider page at a time.

Provider text becomes storable here, the one boundary between provider payloads and rows
(``safeguards.storable``): NUL and unpaired surrogates are replaced, over-long ids fitted, and
each changed field is counted, logged and noted on the row (``extra["storable_repaired"]``).
A page the database still refuses is written row by row, each in its own savepoint, so the
rows it accepts commit and only the ones it refuses are returned to be set aside.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, text
from sqlalchemy.orm import Session

from models import SyncedMessage
from providers.base import LabelChange, RemoteMessage
from safeguards.health_metrics.prometheus import count_value_repairs
from safeguards.storable import (
    DATA_ERRORS,
    data_error_kind,
    data_error_reason,
    is_storable,
    storable_fields,
    storable_optional,
    storable_text,
)

log = logging.getLogger(__name__)

#: Width of the provider id columns of ``synced_messages``, characters (models.sync).
ID_CHARS = 255
#: Every provider text field of a row, with its column's width (None: unbounded text).
_TEXT_BOUNDS: dict[str, int | None] = {
    "provider_message_id": ID_CHARS,
    "thread_id": ID_CHARS,
    "labels": None,
    "subject": None,
    "sender": None,
    "provider_version": ID_CHARS,
}
#: Key of ``synced_messages.extra`` listing the fields whose provider value was made storable.
REPAIRED_KEY = "storable_repaired"
#: Key of ``synced_messages.extra`` listing the fields the adapter could not read (left empty).
UNREADABLE_KEY = "provider_unreadable"
_TABLE = "synced_messages"

# Adds and removes labels in SQL, so applying the same change twice changes nothing.
_RELABEL = text(
    "UPDATE synced_messages SET labels = ARRAY("
    " SELECT DISTINCT l FROM unnest(labels || CAST(:added AS text[])) AS l"
    " WHERE l <> ALL(CAST(:removed AS text[])) ORDER BY l),"
    " updated_at = now()"
    " WHERE store_id = :store_id AND provider_message_id = :message_id"
)


@dataclass(frozen=True)
class RefusedRow:
    """A message the database refused even after its text was made storable."""

    provider_message_id: str
    #: The exception's class, e.g. ``DataError``.
    error: str
    #: The database's message (no parameters: they may hold the message's contents).
    reason: str


@dataclass
class Upserted:
    """What one page's upsert stored, and what it had to refuse."""

    stored: int = 0
    refused: list[RefusedRow] = field(default_factory=list)


def message_key(message_id: str) -> str:
    """A provider message id as stored: the same mapping for upserts, deletes and relabels."""
    return storable_text(message_id, ID_CHARS)


def storable_cursor(store_id: uuid.UUID, value: str | None) -> str | None:
    """A provider cursor or page token as stored (``sync_cursor``, the job's checkpoint).

    A changed cursor is no longer the provider's: it is logged and counted, and the provider's
    refusal of it then starts a full resync (a lost cursor), which is the honest outcome.
    """
    if value is None or is_storable(value):
        return value
    log.warning("store %s: provider cursor made storable, expect a full resync", store_id)
    count_value_repairs("sync_jobs", ["cursor"], "storable")
    return storable_text(value)


def _storable_labels(labels: Sequence[str]) -> list[str]:
    return sorted({storable_text(label) for label in labels})


def _row(store_id: uuid.UUID, message: RemoteMessage) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "provider_message_id": message.provider_message_id,
        "thread_id": message.thread_id,
        "labels": list(message.labels),
        "subject": message.subject,
        "sender": message.sender,
        "provider_version": message.version,
    }
    repaired = storable_fields(raw, _TEXT_BOUNDS)
    if not repaired and not message.unreadable:
        # Every text already storable (the common case): the storable_* calls below would
        # return each value unchanged, at ~half this function's cost per message.
        return {
            **raw,
            "labels": sorted(set(message.labels)),
            "received_at": message.received_at,
            "size_bytes": message.size_bytes,
            "extra": {},
        }
    row = {
        "provider_message_id": message_key(message.provider_message_id),
        "thread_id": storable_optional(message.thread_id, ID_CHARS),
        "labels": _storable_labels(message.labels),
        "subject": storable_optional(message.subject),
        "sender": storable_optional(message.sender),
        "received_at": message.received_at,
        "size_bytes": message.size_bytes,
        "provider_version": storable_optional(message.version, ID_CHARS),
        "extra": _note(repaired, list(message.unreadable)),
    }
    if repaired:
        log.warning(
            "store %s message %r: made %s storable (NUL, unpaired surrogate or over-long)",
            store_id,
            row["provider_message_id"],
            ", ".join(repaired),
        )
        count_value_repairs(_TABLE, repaired, "storable")
    if message.unreadable:
        log.warning(
            "store %s message %r: provider sent unreadable %s, stored empty",
            store_id,
            row["provider_message_id"],
            ", ".join(message.unreadable),
        )
        count_value_repairs(_TABLE, message.unreadable, "unreadable")
    return row


def _note(repaired: list[str], unreadable: list[str]) -> dict[str, list[str]]:
    note = {REPAIRED_KEY: repaired, UNREADABLE_KEY: unreadable}
    return {key: fields for key, fields in note.items() if fields}


# One statement for a whole page, its text constant so psycopg prepares it once per connection:
# the page travels as one JSON array that ``jsonb_to_recordset`` turns back into typed rows
# (JSON arrays become ``text[]``, ISO strings ``timestamptz``). Building a fresh multi-row
# ``INSERT ... VALUES`` per page cost SQLAlchemy more than the database's own work (issue 12).
_UPSERT = text(
    "INSERT INTO synced_messages (store_id, provider_message_id, thread_id, labels, subject,"
    " sender, received_at, size_bytes, provider_version, extra)"
    " SELECT CAST(:store_id AS uuid), r.provider_message_id, r.thread_id,"
    " coalesce(r.labels, '{}'), r.subject, r.sender, r.received_at, r.size_bytes,"
    " r.provider_version, coalesce(r.extra, '{}')"
    " FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(provider_message_id text,"
    " thread_id text, labels text[], subject text, sender text, received_at timestamptz,"
    " size_bytes bigint, provider_version text, extra jsonb)"
    " ON CONFLICT (store_id, provider_message_id) DO UPDATE SET"
    " thread_id = excluded.thread_id, labels = excluded.labels, subject = excluded.subject,"
    " sender = excluded.sender, received_at = excluded.received_at,"
    " size_bytes = excluded.size_bytes, provider_version = excluded.provider_version,"
    # The repair notes describe the latest version only; other keys of ``extra`` stay.
    f" extra = (synced_messages.extra - ARRAY['{REPAIRED_KEY}', '{UNREADABLE_KEY}'])"
    " || excluded.extra, updated_at = now()"
)


def _write(session: Session, store_id: uuid.UUID, rows: list[dict[str, Any]]) -> None:
    """Upsert ``rows`` (``_row`` dicts without their store) in one statement."""
    payload = json.dumps(rows, default=_json_value, ensure_ascii=False)
    session.execute(_UPSERT, {"store_id": store_id, "rows": payload})


def _json_value(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def upsert_messages(
    session: Session, store_id: uuid.UUID, messages: Sequence[RemoteMessage]
) -> Upserted:
    """Insert or update ``messages`` keyed by provider message id; refused rows are returned.

    One prepared statement for the page when the database accepts it; otherwise (a DataError
    or IntegrityError, see ``safeguards.storable.DATA_ERRORS``) one savepoint per row.
    Idempotent: the same page twice leaves the same rows (only ``updated_at`` moves).
    """
    if not messages:
        return Upserted()
    # A provider page may repeat a message (Graph delta); the last version wins.
    latest = {message_key(m.provider_message_id): m for m in messages}
    rows = [_row(store_id, m) for m in latest.values()]
    try:
        with session.begin_nested():
            _write(session, store_id, rows)
        return Upserted(stored=len(rows))
    except DATA_ERRORS as exc:
        log.warning(
            "store %s: page refused (%s), writing it row by row", store_id, data_error_kind(exc)
        )
    result = Upserted()
    for row in rows:
        try:
            with session.begin_nested():
                _write(session, store_id, [row])
            result.stored += 1
        except DATA_ERRORS as exc:
            result.refused.append(
                RefusedRow(row["provider_message_id"], data_error_kind(exc), data_error_reason(exc))
            )
    return result


def delete_messages(session: Session, store_id: uuid.UUID, message_ids: Sequence[str]) -> int:
    """Remove messages deleted at the provider; unknown ids are fine (deletes are idempotent)."""
    if not message_ids:
        return 0
    result = session.execute(
        delete(SyncedMessage).where(
            SyncedMessage.store_id == store_id,
            SyncedMessage.provider_message_id.in_([message_key(i) for i in message_ids]),
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


def relabel_messages(session: Session, store_id: uuid.UUID, changes: Sequence[LabelChange]) -> None:
    """Apply Gmail label additions and removals in order."""
    if not changes:
        return
    session.execute(
        _RELABEL.bindparams(bindparam("added"), bindparam("removed")),
        [
            {
                "store_id": store_id,
                "message_id": message_key(c.provider_message_id),
                "added": _storable_labels(c.added),
                "removed": _storable_labels(c.removed),
            }
            for c in changes
        ],
    )


def sweep_unseen(session: Session, store_id: uuid.UUID, since: datetime) -> int:
    """After a full listing, drop local messages the listing did not touch: deleted meanwhile."""
    result = session.execute(
        delete(SyncedMessage).where(
            SyncedMessage.store_id == store_id, SyncedMessage.updated_at < since
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


def database_now(session: Session) -> datetime:
    """The database's clock, the one ``updated_at`` is written with."""
    return session.execute(text("SELECT clock_timestamp()")).scalar_one()  # type: ignore[no-any-return]
