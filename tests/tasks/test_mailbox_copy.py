"""The page write of ``tasks.sync.mailbox_copy`` on real PostgreSQL: one statement, idempotent."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from models import Provider, SyncedMessage
from providers.base import RemoteMessage
from syncguard.db import service_session
from tasks.sync.mailbox_copy import upsert_messages
from tests.factories import make_business, make_store

COLUMNS = (
    "provider_message_id",
    "thread_id",
    "labels",
    "subject",
    "sender",
    "received_at",
    "size_bytes",
    "provider_version",
    "extra",
)


def _message(i: int, **changes: Any) -> RemoteMessage:
    fields: dict[str, Any] = {
        "provider_message_id": f"m{i}",
        "thread_id": f"t{i % 3}",
        "labels": ("UNREAD", "INBOX"),
        "subject": f"order {i} \u00e9t\u00e9 \u2603",
        "sender": "shop@example.com",
        "received_at": datetime(2026, 1, 2, 3, 4, i, tzinfo=UTC),
        "size_bytes": 100 + i,
        "version": str(1000 + i),
        **changes,
    }
    return RemoteMessage(**fields)


def _store(engine: Engine) -> uuid.UUID:
    with service_session(engine) as session:
        return make_store(session, make_business(session), Provider.GMAIL).id


def _rows(engine: Engine, store_id: uuid.UUID) -> list[tuple[Any, ...]]:
    with service_session(engine) as session:
        found = session.scalars(
            select(SyncedMessage)
            .where(SyncedMessage.store_id == store_id)
            .order_by(SyncedMessage.provider_message_id)
        ).all()
        return [(m.id, *(getattr(m, c) for c in COLUMNS)) for m in found]


def _write(engine: Engine, store_id: uuid.UUID, page: list[RemoteMessage]) -> int:
    with service_session(engine) as session:
        result = upsert_messages(session, store_id, page)
        assert result.refused == []
        return result.stored


def test_the_same_page_written_twice_leaves_the_same_rows(engine: Engine) -> None:
    store_id = _store(engine)
    page = [_message(i) for i in range(5)]

    assert _write(engine, store_id, page) == 5
    first = _rows(engine, store_id)
    assert _write(engine, store_id, page) == 5

    assert _rows(engine, store_id) == first  # same ids, same values, no duplicates
    assert [r[1] for r in first] == [f"m{i}" for i in range(5)]
    row = dict(zip(("id", *COLUMNS), first[0], strict=True))
    assert row["labels"] == ["INBOX", "UNREAD"]  # stored sorted
    assert row["subject"] == "order 0 \u00e9t\u00e9 \u2603"
    assert row["received_at"] == datetime(2026, 1, 2, 3, 4, 0, tzinfo=UTC)
    assert (row["size_bytes"], row["provider_version"], row["extra"]) == (100, "1000", {})


def test_a_newer_version_updates_its_row_and_keeps_other_extra_keys(engine: Engine) -> None:
    store_id = _store(engine)
    _write(engine, store_id, [_message(1, subject="bad\x00subject")])
    with service_session(engine) as session:
        stored = session.scalars(
            select(SyncedMessage).where(SyncedMessage.store_id == store_id)
        ).one()
        assert stored.extra == {"storable_repaired": ["subject"]}
        stored.extra = {**stored.extra, "note": "kept"}

    _write(engine, store_id, [_message(1, subject="fixed", labels=("STARRED",), version="2000")])

    [row] = _rows(engine, store_id)
    values = dict(zip(("id", *COLUMNS), row, strict=True))
    assert (values["subject"], values["labels"], values["provider_version"]) == (
        "fixed",
        ["STARRED"],
        "2000",
    )
    assert values["extra"] == {"note": "kept"}  # the repair note was about the old version


def test_a_page_repeating_a_message_stores_its_last_version(engine: Engine) -> None:
    store_id = _store(engine)
    assert _write(engine, store_id, [_message(1), _message(1, subject="later", thread_id=None)])
    [row] = _rows(engine, store_id)
    assert (row[2], row[4]) == (None, "later")
