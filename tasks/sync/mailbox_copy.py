"""The local copy of a mailbox: idempotent bulk writes of one provider page at a time."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models import SyncedMessage
from providers.base import LabelChange, RemoteMessage

# Adds and removes labels in SQL, so applying the same change twice changes nothing.
_RELABEL = text(
    "UPDATE synced_messages SET labels = ARRAY("
    " SELECT DISTINCT l FROM unnest(labels || CAST(:added AS text[])) AS l"
    " WHERE l <> ALL(CAST(:removed AS text[])) ORDER BY l),"
    " updated_at = now()"
    " WHERE store_id = :store_id AND provider_message_id = :message_id"
)


def _row(store_id: uuid.UUID, message: RemoteMessage) -> dict[str, Any]:
    return {
        "store_id": store_id,
        "provider_message_id": message.provider_message_id,
        "thread_id": message.thread_id,
        "labels": sorted(set(message.labels)),
        "subject": message.subject,
        "sender": message.sender,
        "received_at": message.received_at,
        "size_bytes": message.size_bytes,
        "provider_version": message.version,
    }


def upsert_messages(
    session: Session, store_id: uuid.UUID, messages: Sequence[RemoteMessage]
) -> int:
    """Insert or update ``messages`` in one statement, keyed by provider message id."""
    if not messages:
        return 0
    # A provider page may repeat a message (Graph delta); the last version wins.
    latest = {m.provider_message_id: m for m in messages}
    rows = [_row(store_id, m) for m in latest.values()]
    stmt = insert(SyncedMessage).values(rows)
    changed = {
        name: stmt.excluded[name]
        for name in ("thread_id", "labels", "subject", "sender", "received_at", "size_bytes")
    }
    stmt = stmt.on_conflict_do_update(
        index_elements=["store_id", "provider_message_id"],
        set_={
            **changed,
            "provider_version": stmt.excluded.provider_version,
            "updated_at": func.now(),
        },
    )
    session.execute(stmt)
    return len(rows)


def delete_messages(session: Session, store_id: uuid.UUID, message_ids: Sequence[str]) -> int:
    """Remove messages deleted at the provider; unknown ids are fine (deletes are idempotent)."""
    if not message_ids:
        return 0
    result = session.execute(
        delete(SyncedMessage).where(
            SyncedMessage.store_id == store_id,
            SyncedMessage.provider_message_id.in_(list(message_ids)),
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
                "message_id": c.provider_message_id,
                "added": list(c.added),
                "removed": list(c.removed),
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
