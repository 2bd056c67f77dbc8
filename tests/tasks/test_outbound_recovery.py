"""The other direction: ``endpoint.recovered`` and ``alert.resolved`` to a real receiver.

A real worker delivers to a real HTTP receiver; each event arrives signed per Standard
Webhooks with the endpoint's secret, like every other event (tests/tasks/test_outbound.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

from syncguard.db import service_session
from tasks.outbound.delivery import enable_endpoint, publish_event, register_endpoint
from tasks.outbound.signing import verify
from tests.factories import make_business
from tests.providers import Reply, ScriptedServer, Seen, scripted_server
from tests.sync_support import eventually
from tests.worker import running_worker

#: Three quick retries; an endpoint counts as failing after 3 failures in a row and is never
#: disabled by time here (only by 410 Gone), so a recovery can follow a failing streak.
WORKER_ENV = {
    "SYNCGUARD_MAX_BACKOFF_S": "1",
    "SYNCGUARD_OUTBOUND_RETRY_SCHEDULE_S": json.dumps([0.2, 0.2, 0.2]),
    "SYNCGUARD_OUTBOUND_TIMEOUT_S": "5",
    "SYNCGUARD_OUTBOUND_DISABLE_AFTER_FAILURES": "3",
    "SYNCGUARD_OUTBOUND_DISABLE_AFTER_S": "3600",
}


@pytest.fixture(scope="module")
def worker() -> Iterator[None]:
    with running_worker(concurrency=2, env=WORKER_ENV):
        yield


@pytest.fixture
def receiver() -> Iterator[ScriptedServer]:
    with scripted_server() as server:
        yield server


@pytest.fixture
def business_id(engine: Engine) -> uuid.UUID:
    with service_session(engine) as session:
        return make_business(session).id


def answer_in_turn(server: ScriptedServer, *replies: Reply) -> None:
    """Answer event deliveries with ``replies`` in turn (the last one repeats)."""
    queue = list(replies)

    def handler(_seen: Seen) -> Reply:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    server.handler = handler


def received(server: ScriptedServer, secret: str, event_type: str) -> list[dict[str, Any]]:
    """The verified bodies of ``event_type`` the receiver got (a bad signature raises)."""
    bodies = []
    for seen in list(server.requests):
        verify(secret, seen.headers, seen.body)
        body = json.loads(seen.body)
        if body["type"] == event_type:
            bodies.append(body)
    return bodies


def alert_status(engine: Engine, endpoint_id: uuid.UUID) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT status FROM alerts WHERE dedup_key = :k ORDER BY raised_at"),
            {"k": f"endpoint_disabled:{endpoint_id}"},
        )
        return [row[0] for row in rows]


@pytest.mark.usefixtures("worker")
def test_a_failing_endpoint_that_succeeds_again_announces_endpoint_recovered(
    business_id: uuid.UUID, receiver: ScriptedServer
) -> None:
    # Given an endpoint failing three times in a row, then answering again
    endpoint_id, secret = register_endpoint(business_id, receiver.url, [])
    answer_in_turn(receiver, Reply(500), Reply(500), Reply(500), Reply(204))
    # When one event's fourth attempt succeeds
    publish_event(business_id, "sync.completed", {"store": "s-1"})
    # Then endpoint.recovered is delivered, signed, saying how long the streak was
    [recovered] = eventually(lambda: received(receiver, secret, "endpoint.recovered"))
    assert recovered["data"]["endpoint_id"] == str(endpoint_id)
    assert recovered["data"]["failures"] == 3
    assert recovered["data"]["was_disabled"] is False
    assert received(receiver, secret, "alert.resolved") == []  # it never was disabled


@pytest.mark.usefixtures("worker")
def test_a_short_failure_is_no_recovery(business_id: uuid.UUID, receiver: ScriptedServer) -> None:
    _, secret = register_endpoint(business_id, receiver.url, [])
    answer_in_turn(receiver, Reply(500), Reply(204))
    publish_event(business_id, "sync.completed", {"store": "s-2"})
    eventually(lambda: [s for s in receiver.requests if b"sync.completed" in s.body][1:])
    publish_event(business_id, "sync.completed", {"store": "s-3"})  # a marker sent after
    eventually(lambda: b"s-3" in b"".join(s.body for s in receiver.requests))
    assert received(receiver, secret, "endpoint.recovered") == []


@pytest.mark.usefixtures("worker")
def test_a_disabled_endpoint_enabled_again_announces_its_recovery_and_the_resolved_alert(
    business_id: uuid.UUID, receiver: ScriptedServer, engine: Engine
) -> None:
    # Given an endpoint disabled by 410 Gone, with its open alert
    endpoint_id, secret = register_endpoint(business_id, receiver.url, [])
    answer_in_turn(receiver, Reply(410))
    publish_event(business_id, "sync.completed", {"store": "s-4"})
    eventually(lambda: alert_status(engine, endpoint_id) == ["open"])
    # When an operator enables it and its next delivery succeeds
    enable_endpoint(endpoint_id)
    answer_in_turn(receiver, Reply(204))
    publish_event(business_id, "sync.completed", {"store": "s-5"})
    # Then its alert is resolved, and both events reach the business, signed
    [recovered] = eventually(lambda: received(receiver, secret, "endpoint.recovered"))
    [resolved] = eventually(lambda: received(receiver, secret, "alert.resolved"))
    assert alert_status(engine, endpoint_id) == ["resolved"]
    assert recovered["data"]["was_disabled"] is True
    assert recovered["data"]["resolved_alert_ids"] == [resolved["data"]["alert_id"]]
    assert resolved["data"]["dedup_key"] == f"endpoint_disabled:{endpoint_id}"
    assert resolved["data"]["rule"] == "endpoint_disabled"
    # And a further success announces nothing more
    publish_event(business_id, "sync.completed", {"store": "s-6"})
    eventually(lambda: b"s-6" in b"".join(s.body for s in receiver.requests))
    assert len(received(receiver, secret, "endpoint.recovered")) == 1
    assert len(received(receiver, secret, "alert.resolved")) == 1
