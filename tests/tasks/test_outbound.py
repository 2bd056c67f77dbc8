"""Outbound webhooks on a real worker, real Redis and PostgreSQL, to a real HTTP receiver."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from sqlalchemy import Engine, text, update

from models import WebhookEndpoint
from safeguards.circuit_breaker.breaker import record_circuit_breaker_result, reset_circuit_breaker
from syncguard.db import service_session
from tasks.outbound.delivery import publish_event, register_endpoint
from tasks.outbound.schedule import countdown_s, parse_retry_after, retry_delay_s
from tasks.outbound.signing import verify
from tests.factories import make_business
from tests.providers import Reply, ScriptedServer, Seen, scripted_server
from tests.sync_support import eventually
from tests.worker import running_worker

#: Retries after 0.2 s, then 2.5 s: the second wait is longer than max_backoff_s (1 s).
SCHEDULE_S = [0.2, 2.5]
WORKER_ENV = {
    "SYNCGUARD_MAX_BACKOFF_S": "1",
    "SYNCGUARD_OUTBOUND_RETRY_SCHEDULE_S": json.dumps(SCHEDULE_S),
    "SYNCGUARD_OUTBOUND_TIMEOUT_S": "5",
    # Disabled after 5 failures in a row *and* 1 s of failing: one message (3 attempts) never is.
    "SYNCGUARD_OUTBOUND_DISABLE_AFTER_FAILURES": "5",
    "SYNCGUARD_OUTBOUND_DISABLE_AFTER_S": "1",
}


@pytest.fixture(scope="module")
def worker() -> Iterator[None]:
    with running_worker(concurrency=4, env=WORKER_ENV):
        yield


@pytest.fixture
def receiver() -> Iterator[ScriptedServer]:
    with scripted_server() as server:
        yield server


@pytest.fixture
def business_id(engine: Engine) -> uuid.UUID:
    with service_session(engine) as session:
        return make_business(session).id


def scripted(server: ScriptedServer, *replies: Reply) -> None:
    """Answer the requests in turn with ``replies``; the last one repeats."""
    queue = list(replies)

    def handler(_seen: Seen) -> Reply:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    server.handler = handler


def attempts(engine: Engine, message_id: str) -> list[tuple[int, bool, int | None]]:
    """(attempt, success, response code) of each logged delivery of ``message_id``."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT attempt, success, response_code FROM webhook_delivery_log "
                "WHERE webhook_id = :m AND direction = 'outbound' ORDER BY created_at"
            ),
            {"m": message_id},
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def endpoint_row(engine: Engine, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    with service_session(engine) as session:
        row = session.get(WebhookEndpoint, endpoint_id, populate_existing=True)
        assert row is not None
        return row


def alerts_of(engine: Engine, endpoint_id: uuid.UUID) -> list[tuple[str, str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT rule, severity, status FROM alerts WHERE dedup_key = :k"),
            {"k": f"endpoint_disabled:{endpoint_id}"},
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def publish_one(business_id: uuid.UUID, data: dict[str, object] | None = None) -> str:
    [message_id] = publish_event(business_id, "sync.completed", data or {"store": "s-1"})
    return message_id


def wait_for(check: Callable[[], object], timeout_s: float = 15.0) -> object:
    return eventually(check, timeout_s=timeout_s)


@pytest.mark.usefixtures("worker")
def test_delivery_arrives_signed_with_the_registered_secret(
    business_id: uuid.UUID, receiver: ScriptedServer, engine: Engine
) -> None:
    # Given an endpoint and a receiver that accepts
    _, secret = register_endpoint(business_id, receiver.url + "/hook", ["sync.completed"])
    scripted(receiver, Reply(204))
    # When an event is published
    message_id = publish_one(business_id, {"store": "s-1", "messages": 3})
    # Then it arrives signed with the secret shown at registration, without the secret inside
    wait_for(lambda: receiver.requests)
    [seen] = receiver.requests
    verify(secret, seen.headers, seen.body)
    assert seen.headers["webhook-id"] == message_id
    assert seen.headers["content-type"] == "application/json"
    body = json.loads(seen.body)
    assert set(body) == {"type", "timestamp", "data"}
    assert body["type"] == "sync.completed"
    assert body["data"] == {"store": "s-1", "messages": 3}
    assert secret not in seen.body.decode()
    assert wait_for(lambda: attempts(engine, message_id)) == [(1, True, 204)]


@pytest.mark.usefixtures("worker")
def test_a_failure_is_retried_with_the_same_webhook_id(
    business_id: uuid.UUID, receiver: ScriptedServer, engine: Engine
) -> None:
    endpoint_id, _ = register_endpoint(business_id, receiver.url, [])
    scripted(receiver, Reply(500, {"error": "boom"}), Reply(200))
    message_id = publish_one(business_id)

    wait_for(lambda: len(attempts(engine, message_id)) == 2)
    assert attempts(engine, message_id) == [(1, False, 500), (2, True, 200)]
    assert [r.headers["webhook-id"] for r in receiver.requests] == [message_id, message_id]
    row = endpoint_row(engine, endpoint_id)
    assert row.consecutive_failures == 0
    assert row.last_success_at is not None and row.last_failure_at is not None


@pytest.mark.usefixtures("worker")
def test_retry_after_is_honoured_when_longer_than_the_schedule(
    business_id: uuid.UUID, receiver: ScriptedServer, engine: Engine
) -> None:
    register_endpoint(business_id, receiver.url, [])
    scripted(receiver, Reply(503, headers={"Retry-After": "2"}), Reply(200))
    seen_at: list[float] = []
    handler = receiver.handler
    receiver.handler = lambda seen: (seen_at.append(time.monotonic()), handler(seen))[1]
    message_id = publish_one(business_id)

    wait_for(lambda: len(attempts(engine, message_id)) == 2)
    assert attempts(engine, message_id) == [(1, False, 503), (2, True, 200)]
    assert seen_at[1] - seen_at[0] >= 1.9  # not the schedule's 0.2 s


@pytest.mark.usefixtures("worker")
def test_a_wait_longer_than_max_backoff_is_split_and_still_delivers(
    business_id: uuid.UUID, receiver: ScriptedServer, engine: Engine
) -> None:
    # Given a receiver that fails twice: the second wait (2.5 s) exceeds max_backoff_s (1 s)
    register_endpoint(business_id, receiver.url, [])
    scripted(receiver, Reply(500), Reply(502), Reply(200))
    seen_at: list[float] = []
    handler = receiver.handler
    receiver.handler = lambda seen: (seen_at.append(time.monotonic()), handler(seen))[1]
    message_id = publish_one(business_id)
    # Then the third attempt comes after the whole wait, though no countdown exceeded 1 s
    wait_for(lambda: len(attempts(engine, message_id)) == 3)
    assert attempts(engine, message_id) == [(1, False, 500), (2, False, 502), (3, True, 200)]
    assert seen_at[2] - seen_at[1] >= SCHEDULE_S[1] - 0.1


@pytest.mark.usefixtures("worker")
def test_410_gone_disables_the_endpoint_at_once(
    business_id: uuid.UUID, receiver: ScriptedServer, engine: Engine
) -> None:
    endpoint_id, _ = register_endpoint(business_id, receiver.url, [])
    scripted(receiver, Reply(410))
    message_id = publish_one(business_id)

    wait_for(lambda: not endpoint_row(engine, endpoint_id).enabled)
    time.sleep(SCHEDULE_S[0] + 1.0)  # a retry, had there been one, would have come by now
    assert attempts(engine, message_id) == [(1, False, 410)]
    assert len(receiver.requests) == 1
    row = endpoint_row(engine, endpoint_id)
    assert row.disabled_reason is not None and "410" in row.disabled_reason
    assert alerts_of(engine, endpoint_id) == [("endpoint_disabled", "warning", "open")]
    # And a disabled endpoint receives no new events
    assert publish_event(business_id, "sync.completed", {}) == []


@pytest.mark.usefixtures("worker")
def test_an_exhausted_schedule_is_archived_without_the_secret(
    business_id: uuid.UUID, receiver: ScriptedServer, engine: Engine
) -> None:
    endpoint_id, secret = register_endpoint(business_id, receiver.url, [])
    scripted(receiver, Reply(500, {"error": "still down"}))
    message_id = publish_one(business_id, {"note": "payload kept"})

    def archived() -> list[tuple[str, str]]:
        with engine.connect() as conn:
            query = (
                "SELECT failure_category, row_to_json(f)::text FROM failed_job_archive f "
                "WHERE job_id = :m"
            )
            return [tuple(r) for r in conn.execute(text(query), {"m": message_id})]  # type: ignore[misc]

    [(category, row_json)] = wait_for(archived)  # type: ignore[misc]
    assert category == "delivery_exhausted"
    assert secret not in row_json and secret.removeprefix("whsec_") not in row_json
    row = json.loads(row_json)
    assert row["job_data"]["task"] == "tasks.outbound.deliver_event"
    assert row["job_data"]["kwargs"]["payload"]["data"] == {"note": "payload kept"}
    assert row["business_id"] == str(business_id)
    assert attempts(engine, message_id) == [(1, False, 500), (2, False, 500), (3, False, 500)]
    assert endpoint_row(engine, endpoint_id).enabled  # 3 failures: not yet "sustained"


@pytest.mark.usefixtures("worker")
def test_sustained_failure_disables_the_endpoint_with_one_alert(
    business_id: uuid.UUID, receiver: ScriptedServer, engine: Engine
) -> None:
    # Given two messages failing together: 4 failures within 0.2 s are not yet "sustained"
    endpoint_id, _ = register_endpoint(business_id, receiver.url, [])
    scripted(receiver, Reply(500))
    first, second = publish_one(business_id), publish_one(business_id)
    # When the fifth failure comes after more than 1 s of failing
    wait_for(lambda: not endpoint_row(engine, endpoint_id).enabled)
    time.sleep(0.3)  # an attempt already on the wire when the endpoint was disabled may land
    sent_by_then = len(receiver.requests)
    time.sleep(1.0)
    # Then the endpoint is disabled once, with one alert, and nothing more is attempted
    row = endpoint_row(engine, endpoint_id)
    assert row.disabled_reason is not None and "in a row" in row.disabled_reason
    assert alerts_of(engine, endpoint_id) == [("endpoint_disabled", "warning", "open")]
    assert len(receiver.requests) == sent_by_then >= 5
    # Two messages race on one endpoint: the fifth failure disables it, and the other
    # message's attempt in flight at that moment may make a sixth.
    logged = attempts(engine, first) + attempts(engine, second)
    assert len(logged) == sent_by_then <= 6


@pytest.mark.usefixtures("worker")
def test_an_open_circuit_holds_deliveries_without_spending_attempts(
    business_id: uuid.UUID, receiver: ScriptedServer, engine: Engine
) -> None:
    # Given the endpoint's circuit is open (five failures in a row trip it)
    endpoint_id, _ = register_endpoint(business_id, receiver.url, [])
    circuit = f"endpoint:{endpoint_id}"
    for _ in range(5):
        record_circuit_breaker_result(None, circuit, False, business_id=business_id)
    scripted(receiver, Reply(200))
    message_id = publish_one(business_id)
    # Then nothing is sent while it is open
    time.sleep(1.5)
    assert receiver.requests == [] and attempts(engine, message_id) == []
    # And once it closes, the delivery goes out as attempt 1
    reset_circuit_breaker(None, circuit, business_id=business_id)
    wait_for(lambda: attempts(engine, message_id))
    assert attempts(engine, message_id) == [(1, True, 200)]


@pytest.mark.usefixtures("worker")
def test_publish_event_filters_by_type_and_skips_disabled_endpoints(
    business_id: uuid.UUID, receiver: ScriptedServer, engine: Engine
) -> None:
    register_endpoint(business_id, receiver.url + "/syncs", ["sync.completed"])
    register_endpoint(business_id, receiver.url + "/alerts", ["alert.raised"])
    register_endpoint(business_id, receiver.url + "/all", [])
    disabled_id, _ = register_endpoint(business_id, receiver.url + "/off", ["sync.completed"])
    with service_session(engine) as session:
        session.execute(
            update(WebhookEndpoint).where(WebhookEndpoint.id == disabled_id).values(enabled=False)
        )
    scripted(receiver, Reply(200))

    message_ids = publish_event(business_id, "sync.completed", {})

    assert len(message_ids) == 2
    wait_for(lambda: len(receiver.requests) == 2)
    time.sleep(0.5)
    assert sorted(receiver.paths()) == ["/all", "/syncs"]
    assert {r.headers["webhook-id"] for r in receiver.requests} == set(message_ids)
    with pytest.raises(ValueError, match="unknown event type"):
        publish_event(business_id, "store.deleted", {})


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "example.com/hook", "https://"])
def test_register_endpoint_rejects_non_http_urls(business_id: uuid.UUID, url: str) -> None:
    with pytest.raises(ValueError, match="endpoint URL"):
        register_endpoint(business_id, url, [])


def test_register_endpoint_rejects_unknown_event_types_and_bad_secrets(
    business_id: uuid.UUID,
) -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        register_endpoint(business_id, "https://example.com", ["sync.started"])
    with pytest.raises(ValueError, match="whsec_"):
        register_endpoint(business_id, "https://example.com", [], secret="plain")


def test_the_secret_is_stored_encrypted(business_id: uuid.UUID, engine: Engine) -> None:
    endpoint_id, secret = register_endpoint(business_id, "https://example.com/h", [])
    stored = endpoint_row(engine, endpoint_id).secret_encrypted
    assert secret.encode() not in stored and secret.removeprefix("whsec_").encode() not in stored


def test_retry_delays_follow_the_schedule_and_a_longer_retry_after() -> None:
    schedule = [5, 300, 1800]
    assert [retry_delay_s(a, schedule) for a in (1, 2, 3, 4)] == [5, 300, 1800, None]
    assert retry_delay_s(1, schedule, retry_after_s=60) == 60
    assert retry_delay_s(2, schedule, retry_after_s=60) == 300
    assert retry_delay_s(1, schedule, retry_after_s=10**9) == 1800  # capped at the longest


def test_retry_after_parses_seconds_and_http_dates() -> None:
    now = 1_700_000_000.0
    http_date = format_datetime(datetime.fromtimestamp(now + 120, UTC), usegmt=True)
    assert parse_retry_after("30", now) == 30
    assert parse_retry_after(http_date, now) == pytest.approx(120)
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_no_countdown_exceeds_max_backoff() -> None:
    assert countdown_s(not_before=1000.0, now=0.0, max_backoff_s=60) == 60
    assert countdown_s(not_before=10.0, now=0.0, max_backoff_s=60) == 10
    assert countdown_s(not_before=0.0, now=5.0, max_backoff_s=60) > 0
