"""Provider faults of one message or one answer never outgrow themselves (issue 10, kind 3).

The real sync task runs in-process against real PostgreSQL and Redis, with Gmail scripted over
HTTP: an error text holding a lone surrogate stays the failure it is (a 503 is retried, its
Retry-After honoured and counted by the breaker), and a message Gmail cannot serve or sends
without a required field is set aside while the rest of its page commits.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, select

from models import FailureCategory, Provider, Store, SyncedMessage, SyncJob, SyncJobStatus
from providers.oauth import OAuthCredentials
from safeguards import ArchiveFilter, list_entries
from safeguards.circuit_breaker.breaker import circuit_stats, record_circuit_breaker_result
from safeguards.health_metrics.prometheus import ROWS_SET_ASIDE
from safeguards.rate_limit.limiter import get_rate_limiter
from syncguard.crypto import encrypt_json
from syncguard.db import service_session
from syncguard.settings import get_settings
from tasks.sync.pipeline import sync_store
from tests.factories import make_business
from tests.providers import Reply, ScriptedServer, Seen, scripted_server, token_reply

ROOT = "/gmail/v1/users/me"
IDS = ("m1", "m2", "m3")
#: A message's path -> the answer that replaces the scripted one.
Fault = Callable[[Seen], Reply | None]


def _message(message_id: str) -> dict[str, Any]:
    return {
        "id": message_id,
        "threadId": message_id,
        "labelIds": ["INBOX"],
        "payload": {"headers": [{"name": "Subject", "value": f"subject {message_id}"}]},
        "internalDate": "1700000000000",
        "sizeEstimate": 1200,
        "historyId": "90",
    }


def _gmail(fault: Fault) -> Callable[[Seen], Reply]:
    def handle(seen: Seen) -> Reply:
        if (token := token_reply(seen)) is not None:
            return token
        if (reply := fault(seen)) is not None:
            return reply
        if seen.path == f"{ROOT}/profile":
            return Reply(200, {"emailAddress": "shop@example.com", "historyId": "100"})
        if seen.path == f"{ROOT}/messages":
            return Reply(200, {"messages": [{"id": i} for i in IDS]})
        if seen.path.startswith(f"{ROOT}/messages/"):
            return Reply(200, _message(seen.path.rsplit("/", 1)[1]))
        return Reply(404, {"error": {"code": 404, "message": "unscripted"}})

    return handle


@pytest.fixture
def gmail(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedServer]:
    with scripted_server() as server:
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


def _sync(store_id: uuid.UUID) -> Any:
    return sync_store.apply(args=[str(store_id)], routing_key="sync")  # as a worker has it


def _job(engine: Engine, store_id: uuid.UUID) -> SyncJob:
    with service_session(engine) as session:
        job = session.scalars(select(SyncJob).where(SyncJob.store_id == store_id)).one()
        session.expunge(job)
        return job


def _stored(engine: Engine, store_id: uuid.UUID) -> list[str]:
    with service_session(engine) as session:
        ids = session.scalars(
            select(SyncedMessage.provider_message_id).where(SyncedMessage.store_id == store_id)
        ).all()
        return sorted(ids)


def _on_m2(reply: Reply) -> Fault:
    return lambda seen: reply if seen.path == f"{ROOT}/messages/m2" else None


def test_a_503_whose_text_holds_a_lone_surrogate_is_retried_after_its_retry_after(
    engine: Engine, gmail: ScriptedServer
) -> None:
    # Given Gmail answering one messages.get with a 503 whose message escapes a lone surrogate
    body = {"error": {"code": 503, "message": "Backend Error \ud800", "status": "UNAVAILABLE"}}
    gmail.handler = _gmail(_on_m2(Reply(503, body, {"Retry-After": "7"})))
    store_id = _store(engine)
    before = time.time()

    # When the store is synced
    result = _sync(store_id)

    # Then the 503 is the transient failure it is: a retry is scheduled, nothing is archived
    assert result.state == "RETRY"
    assert list_entries(ArchiveFilter(store_id=store_id)) == []
    # ...and the retry (run at once in-process) finds the store held and waits out the hint
    job = _job(engine, store_id)
    assert job.status is SyncJobStatus.DEFERRED, job.error_message
    assert job.eta is not None and job.eta.timestamp() >= before + 7
    # ...the store's limiter holds every job back for Gmail's Retry-After
    throttled = get_rate_limiter().usage(str(store_id), provider=Provider.GMAIL).throttled_until
    assert throttled is not None and throttled >= before + 7
    # ...and the breaker counted the provider's failure, its text made storable
    circuit = circuit_stats(store_id, "gmail")
    assert circuit.total_failures == 1
    assert "Backend Error \ufffd" in (circuit.last_failure_reason or "")


def test_a_400_whose_text_holds_a_nul_and_a_lone_surrogate_is_archived_with_its_text(
    engine: Engine, gmail: ScriptedServer
) -> None:
    # Given Gmail refusing the listing with a message holding a NUL and a lone surrogate
    body = {"error": {"code": 400, "message": "Invalid \u0000 q\udfff", "status": "INVALID"}}
    listing = Reply(400, body)
    gmail.handler = _gmail(lambda seen: listing if seen.path == f"{ROOT}/messages" else None)
    store_id = _store(engine)

    result = _sync(store_id)

    # Then it is archived at once as the request's own fault, with the provider's text
    assert result.state == "FAILURE"
    [entry] = list_entries(ArchiveFilter(store_id=store_id))
    assert entry.failure_category is FailureCategory.VALIDATION
    assert entry.retry_count == 0
    assert "Invalid \ufffd q\ufffd" in entry.failure_reason
    assert circuit_stats(store_id, "gmail").total_failures == 0  # our request, not their health


def test_the_breaker_stores_a_failure_reason_it_could_not_encode_as_storable_text() -> None:
    store_id = uuid.uuid4()

    record_circuit_breaker_result(store_id, "gmail", False, failure_reason="x\ud800\x00y")

    stats = circuit_stats(store_id, "gmail")
    assert (stats.total_failures, stats.last_failure_reason) == (1, "x\ufffd\ufffdy")


def _set_aside_count(error: str) -> float:
    raw = redis.Redis.from_url(os.environ["REDIS_URL"]).hgetall(ROWS_SET_ASIDE.redis_key())
    field = json.dumps(["synced_messages", error], separators=(",", ":"))
    return float(raw.get(field.encode(), 0))


def _assert_m2_set_aside(engine: Engine, store_id: uuid.UUID, result: Any, error: str) -> None:
    """The job succeeded at once, m1 and m3 stored, the cursor moved, m2 archived as data."""
    assert result.state == "SUCCESS", result.result
    job = _job(engine, store_id)
    assert job.status is SyncJobStatus.SUCCEEDED, job.error_message
    assert (job.attempts, job.messages_upserted) == (1, 2)
    assert _stored(engine, store_id) == ["m1", "m3"]
    with service_session(engine) as session:
        assert session.get(Store, store_id).sync_cursor == "100"  # type: ignore[union-attr]
    [entry] = list_entries(ArchiveFilter(store_id=store_id))
    assert entry.failure_category is FailureCategory.VALIDATION
    assert entry.error_context["provider_message_id"] == "m2"
    assert entry.error_context["error"] == error
    assert (entry.task, entry.args) == ("tasks.sync.sync_store", [str(store_id)])


def test_a_400_on_one_messages_get_sets_that_message_aside_and_the_page_commits(
    engine: Engine, gmail: ScriptedServer
) -> None:
    # Given Gmail refusing to serve one message of three (400, the message's own fault)
    body = {"error": {"code": 400, "message": "Invalid id value", "status": "INVALID_ARGUMENT"}}
    gmail.handler = _gmail(_on_m2(Reply(400, body)))
    store_id = _store(engine)
    before = _set_aside_count("ProviderRequestError 400")

    result = _sync(store_id)

    _assert_m2_set_aside(engine, store_id, result, "ProviderRequestError 400")
    [entry] = list_entries(ArchiveFilter(store_id=store_id))
    assert "Invalid id value" in entry.failure_reason
    assert _set_aside_count("ProviderRequestError 400") == before + 1


def test_a_message_answered_without_its_id_is_set_aside_and_later_syncs_succeed(
    engine: Engine, gmail: ScriptedServer
) -> None:
    # Given Gmail answering one messages.get without the required "id"
    no_id = {k: v for k, v in _message("m2").items() if k != "id"}
    gmail.handler = _gmail(_on_m2(Reply(200, no_id)))
    store_id = _store(engine)
    before = _set_aside_count("ProviderPayloadError")

    result = _sync(store_id)

    _assert_m2_set_aside(engine, store_id, result, "ProviderPayloadError")
    assert _set_aside_count("ProviderPayloadError") == before + 1
    # And the next full sync succeeds too, the message set aside once
    with service_session(engine) as session:
        session.get(Store, store_id).sync_cursor = None  # type: ignore[union-attr]
    assert _sync(store_id).state == "SUCCESS"
    assert len(list_entries(ArchiveFilter(store_id=store_id))) == 1


def test_history_records_without_a_message_id_are_set_aside_and_the_cursor_moves(
    engine: Engine, gmail: ScriptedServer
) -> None:
    # Given an incremental sync whose history holds records without a usable message id
    history = {
        "history": [
            {
                "id": "101",
                "messagesAdded": [{"message": {"threadId": "t"}}, {"message": {"id": "m1"}}],
            },
            {"id": "102", "messagesDeleted": [{"message": None}]},
            {"id": "103", "labelsAdded": [{"message": {"id": ["x"]}, "labelIds": ["STARRED"]}]},
        ],
        "historyId": "120",
    }
    reply = Reply(200, history)
    gmail.handler = _gmail(lambda seen: reply if seen.path == f"{ROOT}/history" else None)
    store_id = _store(engine)
    with service_session(engine) as session:
        session.get(Store, store_id).sync_cursor = "100"  # type: ignore[union-attr]

    result = _sync(store_id)

    # Then the readable change is applied and the cursor moves past the page
    assert result.state == "SUCCESS", result.result
    assert _stored(engine, store_id) == ["m1"]
    with service_session(engine) as session:
        assert session.get(Store, store_id).sync_cursor == "120"  # type: ignore[union-attr]
    # ...and each unreadable record is archived once, under a stable digest of itself
    entries = list_entries(ArchiveFilter(store_id=store_id))
    assert len(entries) == 3
    assert all(e.failure_category is FailureCategory.VALIDATION for e in entries)
    assert all(e.error_context["provider_message_id"].startswith("unread:") for e in entries)


def test_a_graph_delta_item_without_an_id_is_set_aside_and_the_rest_commits(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    delta = "/v1.0/me/mailFolders/inbox/messages/delta"

    def graph(seen: Seen) -> Reply:
        if (token := token_reply(seen)) is not None:
            return token
        items = [{"subject": "no id", "changeKey": "k0"}, {"id": "AAMk-1", "subject": "ok"}]
        return Reply(200, {"value": items, "@odata.deltaLink": f"{server.url}{delta}?t=1"})

    with scripted_server() as server:
        server.handler = graph
        monkeypatch.setenv("SYNCGUARD_GRAPH_API_URL", server.url)
        monkeypatch.setenv("SYNCGUARD_GRAPH_TOKEN_URL", f"{server.url}/token")
        get_settings.cache_clear()
        try:
            store_id = _store(engine, "outlook")
            result = _sync(store_id)
        finally:
            get_settings.cache_clear()

    assert result.state == "SUCCESS", result.result
    assert _stored(engine, store_id) == ["AAMk-1"]
    [entry] = list_entries(ArchiveFilter(store_id=store_id))
    assert entry.error_context["error"] == "ProviderPayloadError"
    assert "required id is missing" in entry.failure_reason


def test_a_profile_without_its_history_id_is_archived_at_once_as_a_data_error(
    engine: Engine, gmail: ScriptedServer
) -> None:
    # Given Gmail's profile answer missing the required historyId (a KeyError before)
    profile = Reply(200, {"emailAddress": "shop@example.com"})
    gmail.handler = _gmail(lambda seen: profile if seen.path == f"{ROOT}/profile" else None)
    store_id = _store(engine)

    result = _sync(store_id)

    # Then it is a permanent data error, archived without spending retries
    assert result.state == "FAILURE"
    [entry] = list_entries(ArchiveFilter(store_id=store_id))
    assert entry.failure_category is FailureCategory.VALIDATION
    assert entry.retry_count == 0
    assert "ProviderPayloadError" in entry.failure_reason


def test_a_message_deleted_since_it_was_listed_is_skipped_through_the_real_guard(
    engine: Engine, gmail: ScriptedServer
) -> None:
    # Given one message gone (404) between messages.list and its messages.get
    gone = {"error": {"code": 404, "message": "Not Found", "status": "NOT_FOUND"}}
    gmail.handler = _gmail(_on_m2(Reply(404, gone)))
    store_id = _store(engine)

    result = _sync(store_id)

    # Then it is no error at all: the others are stored, nothing is archived
    assert result.state == "SUCCESS", result.result
    assert _stored(engine, store_id) == ["m1", "m3"]
    assert list_entries(ArchiveFilter(store_id=store_id)) == []


def test_a_listing_answered_with_a_body_that_is_not_json_is_a_data_error(
    engine: Engine, gmail: ScriptedServer
) -> None:
    # Given Gmail answering messages.list 200 with an HTML page instead of JSON
    page = Reply(200, text="<html>Service hiccup</html>")
    gmail.handler = _gmail(lambda seen: page if seen.path == f"{ROOT}/messages" else None)
    store_id = _store(engine)

    result = _sync(store_id)

    # Then it is archived at once as the data error it is (a ValueError before: retried 5x)
    assert result.state == "FAILURE"
    [entry] = list_entries(ArchiveFilter(store_id=store_id))
    assert entry.failure_category is FailureCategory.VALIDATION
    assert entry.retry_count == 0
    assert "messages.list: unreadable answer" in entry.failure_reason
