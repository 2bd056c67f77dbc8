"""Poison messages end in the dead-letter archive and never stop a worker (issue 11, point 5).

Each poison kind is put on the real broker, this run's Redis (tests/conftest.py makes it the
broker; RabbitMQ's cases are in test_poison_messages_amqp), the way it would arrive in
production (a bogus task name through ``send_task``, a hand-built message through kombu,
garbage pushed with LPUSH onto the queue's Redis list), a real ``celery worker`` consumes it,
and then:
exactly one archive row with category ``validation`` holding the raw message (redacted),
the worker process still alive, and a good task sent afterwards on the same queue runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Exchange, Producer, Queue
from sqlalchemy import Engine, Text, cast, select

from models import FailedJobArchive, FailureCategory
from safeguards.dead_letter import replay
from syncguard.db import service_session
from tasks import app
from tasks.queues import SYNC, WEBHOOKS
from tasks.replay import enqueue_archived
from tests import workload
from tests.factories import make_business, make_store
from tests.sync_support import eventually
from tests.worker import running_worker

#: A secret-shaped value every poison carries; it must never reach the archive.
SECRET = "ya29.a0AfH6SMBsecretsecretsecret"
#: How long a poison may take to reach the archive, seconds (a bound, not a measurement).
ARCHIVE_WITHIN_S = 30.0


@pytest.fixture(scope="module")
def worker() -> Iterator[subprocess.Popen[str]]:
    with running_worker(include=("tests.workload",), concurrency=2) as proc:
        yield proc


@pytest.fixture
def marker() -> str:
    return f"poison-{uuid.uuid4().hex}"


def _archived(engine: Engine, marker: str) -> list[FailedJobArchive]:
    """Archive rows whose stored job mentions ``marker`` anywhere."""
    with service_session(engine) as session:
        statement = select(FailedJobArchive).where(
            cast(FailedJobArchive.job_data, Text).contains(marker)
        )
        rows = list(session.scalars(statement))
        session.expunge_all()
        return rows


def _assert_archived_once(engine: Engine, marker: str) -> FailedJobArchive:
    rows = eventually(lambda: _archived(engine, marker), ARCHIVE_WITHIN_S)
    [row] = rows
    assert row.failure_category == FailureCategory.VALIDATION
    stored = json.dumps(row.job_data) + json.dumps(row.error_context) + row.failure_reason
    assert SECRET not in stored
    return row


def _assert_still_consuming(worker: subprocess.Popen[str], queue: str) -> None:
    assert worker.poll() is None, "the worker exited"
    result = app.send_task("tasks.maintenance.heartbeat", queue=queue)
    assert result.get(timeout=60)["redis_ping"] is True
    assert worker.poll() is None
    # Celery's log lines about poison messages quote them: never with the secret.
    assert SECRET not in Path(os.readlink(f"/proc/{worker.pid}/fd/1")).read_text()


def _publish_raw(body: bytes, *, content_type: str, headers: dict[str, Any], queue: str) -> None:
    """Publish a message built by hand (not by Celery) onto ``queue``."""
    entity = Queue(queue, Exchange(queue, type="direct"), routing_key=queue)
    with app.connection_for_write() as conn:
        Producer(conn).publish(
            body,
            exchange=entity.exchange,
            routing_key=queue,
            content_type=content_type,
            content_encoding="utf-8",
            headers=headers,
            declare=[entity],
        )


def _queue_list_key(queue: str) -> str:
    """The Redis list the broker keeps ``queue`` in (celeryconfig's global_keyprefix)."""
    return f"{os.environ['SYNCGUARD_REDIS_PREFIX']}{queue}"


def test_an_unknown_task_name_is_archived_with_its_message(
    worker: subprocess.Popen[str], engine: Engine, marker: str
) -> None:
    result = app.send_task(
        "tasks.no_such_task", args=[marker], kwargs={"access_token": SECRET}, queue=SYNC
    )

    row = _assert_archived_once(engine, marker)
    assert row.job_id == result.id and row.job_type == "tasks.no_such_task"
    assert row.job_data["args"] == [marker]
    assert row.job_data["kwargs"] == {"access_token": "[REDACTED]"}
    assert row.job_data["options"]["queue"] == SYNC
    _assert_still_consuming(worker, SYNC)
    # A replay is a new message (fresh id): archived again as its own entry, not merged.
    replayed = replay(row.id, enqueue=enqueue_archived, replayed_by="test")
    rows = eventually(lambda: len(_archived(engine, marker)) == 2 and _archived(engine, marker))
    assert {r.job_id for r in rows} == {result.id, replayed.replay_task_id}


def test_wrong_arguments_to_a_plain_task_are_archived(
    worker: subprocess.Popen[str], engine: Engine, marker: str
) -> None:
    result = app.send_task("tasks.maintenance.heartbeat", args=[marker, SECRET], queue=SYNC)

    row = _assert_archived_once(engine, marker)
    assert row.job_id == result.id and row.retry_count == 0
    assert "TypeError" in row.failure_reason or "argument" in row.failure_reason
    _assert_still_consuming(worker, SYNC)


def test_wrong_arguments_to_a_safeguarded_task_are_validation_not_retried(
    worker: subprocess.Popen[str], engine: Engine, marker: str
) -> None:
    with service_session(engine) as session:
        store_id = str(make_store(session, make_business(session)).id)
    # flaky(store_id, marker) given a third, unexpected argument (send_task: no client check).
    result = app.send_task("tests.workload.flaky", args=[store_id, marker, SECRET], queue=SYNC)

    row = _assert_archived_once(engine, marker)
    assert row.job_id == result.id
    assert row.retry_count == 0
    assert workload.runs(marker) == 0  # the body never ran
    _assert_still_consuming(worker, SYNC)


def test_an_outbound_delivery_failing_on_malformed_input_is_archived(
    worker: subprocess.Popen[str], engine: Engine, marker: str
) -> None:
    result = app.send_task(
        "tasks.outbound.deliver_event",
        kwargs={
            "endpoint_id": f"not-a-uuid-{marker}",
            "message_id": marker,
            "event_type": "sync.completed",
            "payload": {"token": SECRET},
        },
        queue=WEBHOOKS,
    )

    row = _assert_archived_once(engine, marker)
    assert row.job_id == result.id and row.job_type == "tasks.outbound.deliver_event"
    assert row.job_data["kwargs"]["payload"] == {"token": "[REDACTED]"}
    _assert_still_consuming(worker, WEBHOOKS)


def test_wrong_arguments_to_an_outbound_delivery_are_archived(
    worker: subprocess.Popen[str], engine: Engine, marker: str
) -> None:
    app.send_task("tasks.outbound.deliver_event", kwargs={"message_id": marker}, queue=WEBHOOKS)

    row = _assert_archived_once(engine, marker)
    assert row.retry_count == 0
    _assert_still_consuming(worker, WEBHOOKS)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param(b'{"not json at all', "application/json", id="non-json-body"),
        pytest.param(b"\x80\x04K\x01.", "application/x-python-serialize", id="pickle-refused"),
        pytest.param(b'{"hello": "world"}', "application/json", id="json-not-protocol-2"),
    ],
)
def test_a_known_task_with_an_undecodable_body_is_archived(
    worker: subprocess.Popen[str], engine: Engine, marker: str, body: bytes, content_type: str
) -> None:
    task_id = f"{marker}-id"
    headers = {"task": "tasks.maintenance.heartbeat", "id": task_id, "authorization": SECRET}

    _publish_raw(body, content_type=content_type, headers=headers, queue=SYNC)

    row = _assert_archived_once(engine, marker)
    assert row.job_id == task_id
    assert row.job_data["headers"] == {"authorization": "[REDACTED]"}  # what replay resends
    assert row.job_data["message"]["headers"]["id"] == task_id
    assert row.job_data["message"]["content_type"] == content_type
    _assert_still_consuming(worker, SYNC)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"task": "tasks.maintenance.heartbeat"}, id="no-task-id"),
        pytest.param(
            {"task": "tasks.maintenance.heartbeat", "id": "x", "timelimit": "soon"},
            id="bad-timelimit",
        ),
    ],
)
def test_a_task_message_with_malformed_headers_is_archived(
    worker: subprocess.Popen[str], engine: Engine, marker: str, headers: dict[str, Any]
) -> None:
    body = json.dumps([[marker], {"secret": SECRET}, {}]).encode()

    _publish_raw(body, content_type="application/json", headers=headers, queue=SYNC)

    row = _assert_archived_once(engine, marker)
    assert row.job_data["args"] == [marker]
    _assert_still_consuming(worker, SYNC)


def test_a_message_that_is_not_celerys_protocol_is_archived(
    worker: subprocess.Popen[str], engine: Engine, marker: str
) -> None:
    body = json.dumps({"event": marker, "password": SECRET}).encode()

    _publish_raw(body, content_type="application/json", headers={}, queue=SYNC)

    row = _assert_archived_once(engine, marker)
    assert row.job_data["message"]["body"] == {"event": marker, "password": "[REDACTED]"}
    _assert_still_consuming(worker, SYNC)


def test_two_identical_poison_messages_are_two_archive_entries(
    worker: subprocess.Popen[str], engine: Engine, marker: str
) -> None:
    # On Redis each message carries a UUID delivery tag (on RabbitMQ identical bodies share one
    # entry: test_poison_messages_amqp).
    body = json.dumps({"event": marker}).encode()

    for _ in range(2):
        _publish_raw(body, content_type="application/json", headers={}, queue=SYNC)

    rows = eventually(lambda: len(_archived(engine, marker)) == 2 and _archived(engine, marker))
    assert len({row.job_id for row in rows}) == 2
    _assert_still_consuming(worker, SYNC)


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param("this is not JSON {marker} access_token={secret}", id="non-json"),
        pytest.param('{{"marker": "{marker}", "token": "{secret}"}}', id="json-not-an-envelope"),
        pytest.param(
            '{{"body": "", "properties": {{"delivery_info": {{}}}},'
            ' "headers": {{"m": "{marker}"}}}}',
            id="envelope-without-delivery-tag",
        ),
    ],
)
def test_garbage_pushed_onto_the_redis_queue_is_archived_and_the_worker_lives(
    worker: subprocess.Popen[str],
    engine: Engine,
    redis_client: redis.Redis,
    marker: str,
    entry: str,
) -> None:
    redis_client.lpush(_queue_list_key(SYNC), entry.format(marker=marker, secret=SECRET))

    row = _assert_archived_once(engine, marker)
    assert row.job_data["message"]["content_type"] == "application/x-syncguard-undecodable"
    _assert_still_consuming(worker, SYNC)
