"""tasks.redis_transport: kombu delivers an unparseable Redis queue entry wrapped, not dying.

This guards the one place we reach into kombu: if an upgrade moves the parse of queue entries
out from under the client replies we wrap, these fail (the worker-level proof is in
test_poison_messages).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator

import pytest
import redis
from kombu import Connection
from kombu.simple import SimpleQueue

from tasks import app
from tasks.redis_transport import (
    UNDECODABLE_CONTENT_TYPE,
    WRAPPED_ID_HEADER,
    WRAPPED_REASON_HEADER,
    Transport,
    envelope_or_wrap,
)


@pytest.fixture
def connection() -> Iterator[Connection]:
    # The run's broker is its Redis (tests/conftest.py); celeryconfig selects our transport.
    with app.connection_for_read() as conn:
        assert isinstance(conn.transport, Transport)
        yield conn


@pytest.fixture
def probe(connection: Connection) -> Iterator[SimpleQueue]:
    queue = connection.SimpleQueue(f"probe-{uuid.uuid4().hex}")
    try:
        yield queue
    finally:
        queue.queue.delete()
        queue.close()


def _push(client: redis.Redis, probe: SimpleQueue, entry: bytes) -> None:
    client.lpush(f"{os.environ['SYNCGUARD_REDIS_PREFIX']}{probe.queue.name}", entry)


@pytest.mark.parametrize("blocking", [True, False], ids=["brpop", "basic-get-rpop"])
def test_a_non_json_entry_is_delivered_wrapped_with_its_raw_bytes(
    redis_client: redis.Redis, probe: SimpleQueue, blocking: bool
) -> None:
    raw = b"\xff\xfe not json at all"
    _push(redis_client, probe, raw)

    message = probe.get(block=True, timeout=10) if blocking else probe.get_nowait()

    assert message.content_type == UNDECODABLE_CONTENT_TYPE
    assert message.body == raw
    assert "not JSON" in message.headers[WRAPPED_REASON_HEADER]
    assert message.delivery_info["routing_key"] == probe.queue.name
    message.ack()


def test_a_well_formed_message_passes_unchanged(probe: SimpleQueue) -> None:
    probe.put({"hello": "world"})

    message = probe.get(block=True, timeout=10)

    assert message.payload == {"hello": "world"}
    assert message.content_type == "application/json"
    message.ack()


def test_a_wrapped_entry_is_restored_to_its_queue_when_not_acknowledged(
    redis_client: redis.Redis, connection: Connection, probe: SimpleQueue
) -> None:
    _push(redis_client, probe, b"garbage")
    first = probe.get(block=True, timeout=10)

    first.reject(requeue=True)
    again = probe.get(block=True, timeout=10)

    assert again.body == b"garbage"
    # The same wrapped entry (same id), not a second wrapping of the raw bytes.
    assert again.headers[WRAPPED_ID_HEADER] == first.headers[WRAPPED_ID_HEADER]
    again.ack()


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (b'"a string"', "a JSON str"),
        (b'{"body": "x"}', "no properties.delivery_tag"),
        (b'{"properties": {"delivery_tag": "t"}}', "no properties.delivery_info"),
        (
            b'{"body": "!!", "properties": {"delivery_tag": "t", "delivery_info": {},'
            b' "body_encoding": "base64"}}',
            "body is not base64",
        ),
        (
            b'{"body": "x", "properties": {"delivery_tag": "t", "delivery_info": {},'
            b' "body_encoding": "rot13"}}',
            "unknown body_encoding",
        ),
    ],
)
def test_json_that_kombu_cannot_deliver_is_wrapped(entry: bytes, problem: str) -> None:
    wrapped = json.loads(envelope_or_wrap(entry, "sync\x06\x163"))

    assert problem in wrapped["headers"][WRAPPED_REASON_HEADER]
    assert wrapped["properties"]["delivery_info"] == {"exchange": "sync", "routing_key": "sync"}


def test_kombus_own_envelope_is_returned_as_is() -> None:
    entry = json.dumps(
        {
            "body": "eyJhIjogMX0=",
            "content-type": "application/json",
            "headers": {},
            "properties": {
                "delivery_tag": "t",
                "delivery_info": {"exchange": "sync", "routing_key": "sync"},
                "body_encoding": "base64",
            },
        }
    ).encode()

    assert envelope_or_wrap(entry, "sync") is entry
