"""Provider payloads the emulator cannot produce never break a sync (issue 10, kind 3).

The real sync task runs in-process against real PostgreSQL and Redis; Gmail and Graph are
scripted HTTP servers, for payloads the emulator does not serve: a ``sizeEstimate`` beyond
PostgreSQL's bigint (a DataError no text repair can fix: the message is set aside while its page
commits), fields of unreadable shapes, and lone surrogates escaped in the JSON.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, select

from models import FailureCategory, Store, SyncedMessage, SyncJob, SyncJobStatus
from providers.oauth import OAuthCredentials
from safeguards import ArchiveFilter, list_entries
from safeguards.health_metrics.prometheus import ROWS_SET_ASIDE
from syncguard.crypto import encrypt_json
from syncguard.db import service_session
from syncguard.settings import get_settings
from tasks.sync.pipeline import sync_store
from tests.factories import make_business
from tests.providers import Handler, Reply, ScriptedServer, Seen, scripted_server, token_reply

ROOT = "/gmail/v1/users/me"
HUGE = 2**70  # past bigint (2**63 - 1)


def _message(message_id: str, size: int) -> dict[str, Any]:
    return {
        "id": message_id,
        "threadId": message_id,
        "labelIds": ["INBOX"],
        "payload": {"headers": [{"name": "Subject", "value": f"subject {message_id}"}]},
        "internalDate": "1700000000000",
        "sizeEstimate": size,
        "historyId": "90",
    }


#: Message id -> fields that replace the scripted defaults of ``_message``.
ODD: dict[str, dict[str, Any]] = {"m2": {"sizeEstimate": HUGE}}


def _gmail(seen: Seen) -> Reply:
    if (token := token_reply(seen)) is not None:
        return token
    if seen.path == f"{ROOT}/profile":
        return Reply(200, {"emailAddress": "shop@example.com", "historyId": "100"})
    if seen.path == f"{ROOT}/messages":
        return Reply(200, {"messages": [{"id": i} for i in ("m1", "m2", "m3")]})
    if seen.path.startswith(f"{ROOT}/messages/"):
        message_id = seen.path.rsplit("/", 1)[1]
        return Reply(200, {**_message(message_id, 1200), **ODD.get(message_id, {})})
    if seen.path == f"{ROOT}/history":
        return Reply(200, {"historyId": "100"})
    return Reply(404, {"error": {"code": 404, "message": "unscripted"}})


@pytest.fixture
def gmail(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedServer]:
    with scripted_server() as server:
        server.handler = _gmail
        monkeypatch.setenv("SYNCGUARD_GMAIL_API_URL", server.url)
        monkeypatch.setenv("SYNCGUARD_GMAIL_TOKEN_URL", f"{server.url}/token")
        get_settings.cache_clear()  # settings are read once per process
        yield server
    get_settings.cache_clear()


def _store(engine: Engine, provider: str = "gmail") -> uuid.UUID:
    credentials = OAuthCredentials("client", "client-secret", "refresh-token")
    with service_session(engine) as session:
        store = Store(
            business_id=make_business(session).id,
            provider=provider,
            mailbox_address=f"shop-{uuid.uuid4().hex[:8]}@example.com",
            credentials_encrypted=encrypt_json(credentials.to_dict()),
        )
        session.add(store)
        session.flush()
        return store.id


def _set_aside_count() -> float:
    raw = redis.Redis.from_url(os.environ["REDIS_URL"]).hgetall(ROWS_SET_ASIDE.redis_key())
    field = json.dumps(["synced_messages", "NumericValueOutOfRange"], separators=(",", ":"))
    return float(raw.get(field.encode(), 0))


def _run_full_sync(engine: Engine, store_id: uuid.UUID) -> tuple[dict[str, Any], SyncJob]:
    with service_session(engine) as session:
        session.get(Store, store_id).sync_cursor = None  # type: ignore[union-attr]
    result = sync_store.apply(args=[str(store_id)]).get()
    with service_session(engine) as session:
        job = session.get(SyncJob, uuid.UUID(result["job_id"]))
        assert job is not None
        session.expunge(job)
    return result, job


def test_a_refused_message_is_set_aside_and_the_rest_of_its_page_commits(
    engine: Engine, gmail: ScriptedServer
) -> None:
    # Given a Gmail page of three messages, one of which the database must refuse
    store_id = _store(engine)
    before = _set_aside_count()

    # When the store is synced
    result, job = _run_full_sync(engine, store_id)

    # Then the job succeeds at once, the other two are stored and the cursor moved on
    assert job.status is SyncJobStatus.SUCCEEDED, job.error_message
    assert result["retries"] == 0 and job.attempts == 1
    assert job.messages_upserted == 2
    with service_session(engine) as session:
        stored = session.scalars(
            select(SyncedMessage.provider_message_id).where(SyncedMessage.store_id == store_id)
        ).all()
        assert sorted(stored) == ["m1", "m3"]
        assert session.get(Store, store_id).sync_cursor == "100"  # type: ignore[union-attr]
    # And the refused one is in the archive for operators, as a data (validation) failure
    [entry] = list_entries(ArchiveFilter(store_id=store_id))
    assert entry.failure_category is FailureCategory.VALIDATION
    assert entry.error_context["provider_message_id"] == "m2"
    assert entry.error_context["sync_job_id"] == str(job.id)
    assert (entry.task, entry.args) == ("tasks.sync.sync_store", [str(store_id)])
    assert "NumericValueOutOfRange" in entry.failure_reason
    assert _set_aside_count() == before + 1


def test_a_later_full_sync_sets_the_same_message_aside_once_and_succeeds(
    engine: Engine, gmail: ScriptedServer
) -> None:
    store_id = _store(engine)
    _run_full_sync(engine, store_id)

    _, again = _run_full_sync(engine, store_id)

    assert again.status is SyncJobStatus.SUCCEEDED, again.error_message
    assert len(list_entries(ArchiveFilter(store_id=store_id))) == 1  # one entry per message


def test_fields_gmail_sends_in_an_unreadable_shape_are_stored_empty_and_noted(
    engine: Engine, gmail: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a page whose messages carry a date that is no date, a non-text label, odd headers
    odd = {
        "m1": {"internalDate": "yesterday", "labelIds": ["INBOX", 7]},
        "m2": {"payload": {"headers": [{"name": "Subject", "value": {"text": "x"}}, "junk"]}},
        "m3": {"sizeEstimate": "big", "threadId": ["t"]},
    }
    for message_id, fields in odd.items():
        monkeypatch.setitem(ODD, message_id, fields)
    store_id = _store(engine)

    _, job = _run_full_sync(engine, store_id)

    # Then every message is stored, the unreadable fields empty and named on the row
    assert job.status is SyncJobStatus.SUCCEEDED, job.error_message
    with service_session(engine) as session:
        rows = {
            row.provider_message_id: row
            for row in session.scalars(
                select(SyncedMessage).where(SyncedMessage.store_id == store_id)
            )
        }
        assert set(rows) == {"m1", "m2", "m3"}
        assert rows["m1"].received_at is None and rows["m1"].labels == ["INBOX"]
        assert rows["m1"].extra == {"provider_unreadable": ["labels", "received_at"]}
        assert rows["m2"].subject is None
        assert rows["m2"].extra == {"provider_unreadable": ["subject"]}
        assert rows["m3"].size_bytes is None and rows["m3"].thread_id is None
        assert rows["m3"].extra == {"provider_unreadable": ["thread_id", "size_bytes"]}
    assert list_entries(ArchiveFilter(store_id=store_id)) == []


DELTA = "/v1.0/me/mailFolders/inbox/messages/delta"


def _graph(url: str) -> Handler:
    """Graph answering one delta page whose items carry lone surrogates (escaped, as JSON may)."""

    def handle(seen: Seen) -> Reply:
        if (token := token_reply(seen)) is not None:
            return token
        if seen.path != DELTA:
            return Reply(404, {"error": {"code": "itemNotFound", "message": "unscripted"}})
        item = {
            "id": "AAMk-1",
            "subject": "Re: order \ud800",
            "from": {"emailAddress": {"address": "a\udfff@example.com"}},
            "categories": ["Blue \ud83d", "Red"],
            "receivedDateTime": "2026-11-30T10:00:00Z",
            "conversationId": "c1",
            "changeKey": "k1",
            "isRead": True,
        }
        return Reply(200, {"value": [item], "@odata.deltaLink": f"{url}{DELTA}?$deltatoken=1"})

    return handle


def test_lone_surrogates_from_graph_are_stored_replaced_and_noted(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with scripted_server() as graph:
        graph.handler = _graph(graph.url)
        monkeypatch.setenv("SYNCGUARD_GRAPH_API_URL", graph.url)
        monkeypatch.setenv("SYNCGUARD_GRAPH_TOKEN_URL", f"{graph.url}/token")
        get_settings.cache_clear()
        try:
            store_id = _store(engine, "outlook")
            _, job = _run_full_sync(engine, store_id)
        finally:
            get_settings.cache_clear()

    assert job.status is SyncJobStatus.SUCCEEDED, job.error_message
    with service_session(engine) as session:
        [row] = session.scalars(select(SyncedMessage).where(SyncedMessage.store_id == store_id))
        assert row.subject == "Re: order \ufffd"
        assert row.sender == "a\ufffd@example.com"
        assert row.labels == ["Blue \ufffd", "Red"]
        assert row.extra == {"storable_repaired": ["labels", "subject", "sender"]}


def test_a_provider_error_whose_text_holds_a_nul_is_archived_not_requeued(
    engine: Engine, gmail: ScriptedServer
) -> None:
    # Given Gmail refusing the listing with an error message that holds a NUL
    def refuse(seen: Seen) -> Reply:
        if seen.path == f"{ROOT}/messages":
            return Reply(400, {"error": {"code": 400, "message": "Invalid \u0000 query"}})
        return _gmail(seen)

    gmail.handler = refuse
    store_id = _store(engine)

    # When the store is synced
    with service_session(engine) as session:
        session.get(Store, store_id).sync_cursor = None  # type: ignore[union-attr]
    result = sync_store.apply(args=[str(store_id)], routing_key="sync")  # as a worker has it

    # Then the job is archived as the validation failure it is, the text made storable
    assert result.state == "FAILURE"
    [entry] = list_entries(ArchiveFilter(store_id=store_id))
    assert entry.failure_category is FailureCategory.VALIDATION
    assert "Invalid \ufffd query" in entry.failure_reason
    assert "Invalid \ufffd query" in entry.error_context["exception_message"]
