"""Provider faults of one message or one answer never outgrow themselves (issue 10, kind 3).

The real sync task runs in-process against real PostgreSQL and Redis, with Gmail scripted over
HTTP: an error text holding a lone surrogate stays the failure it is (a 503 is retried, its
Retry-After honoured and counted by the breaker), and a message Gmail cannot serve or sends
without a required field is set aside while the rest of its page commits.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, select

from models import FailureCategory, Provider, Store, SyncedMessage, SyncJob, SyncJobStatus
from providers.oauth import OAuthCredentials
from safeguards import ArchiveFilter, list_entries
from safeguards.circuit_breaker.breaker import circuit_stats, record_circuit_breaker_result
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


def _store(engine: Engine) -> uuid.UUID:
    credentials = OAuthCredentials("client", "client-secret", "refresh-token")
    with service_session(engine) as session:
        store = Store(
            business_id=make_business(session).id,
            provider="gmail",
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
