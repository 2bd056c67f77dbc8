"""Poison messages on RabbitMQ: archived, the worker alive, the next task run (issue 11, 5 and 6).

The worker runs with ``BROKER_URL`` on a RabbitMQ vhost of this module's own (created and
deleted with ``rabbitmqctl``); results still go to this run's Redis, so the test reads them.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery.result import AsyncResult
from kombu import Connection, Exchange, Producer, Queue
from sqlalchemy import Engine, Text, cast, select

from models import FailedJobArchive, FailureCategory
from syncguard.db import service_session
from tasks import app
from tasks.queues import SYNC
from tests.sync_support import eventually
from tests.worker import running_worker

#: RabbitMQ on this machine (the CI service), guest/guest on localhost.
AMQP_SERVER = "amqp://guest:guest@127.0.0.1:5672"
SECRET = "ya29.a0AfH6SMBsecretsecretsecret"


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def amqp_url() -> Iterator[str]:
    vhost = f"syncguard-test-{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"{AMQP_SERVER}/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(scope="module")
def worker(amqp_url: str) -> Iterator[subprocess.Popen[str]]:
    with running_worker(env={"BROKER_URL": amqp_url}, concurrency=2) as proc:
        yield proc


def _send(amqp_url: str, name: str, **options: Any) -> AsyncResult:
    with Connection(amqp_url) as conn, Producer(conn) as producer:
        result: AsyncResult = app.send_task(name, producer=producer, queue=SYNC, **options)
        return result


def _publish_raw(amqp_url: str, body: bytes, headers: dict[str, Any]) -> None:
    entity = Queue(SYNC, Exchange(SYNC, type="direct"), routing_key=SYNC)
    with Connection(amqp_url) as conn:
        Producer(conn).publish(
            body,
            exchange=entity.exchange,
            routing_key=SYNC,
            content_type="application/json",
            content_encoding="utf-8",
            headers=headers,
        )


def _archived(engine: Engine, marker: str) -> list[FailedJobArchive]:
    with service_session(engine) as session:
        statement = select(FailedJobArchive).where(
            cast(FailedJobArchive.job_data, Text).contains(marker)
        )
        rows = list(session.scalars(statement))
        session.expunge_all()
        return rows


def _assert_archived_then_consuming(
    engine: Engine, marker: str, worker: subprocess.Popen[str], amqp_url: str
) -> FailedJobArchive:
    [row] = eventually(lambda: _archived(engine, marker), timeout_s=30)
    assert row.failure_category == FailureCategory.VALIDATION
    assert SECRET not in json.dumps(row.job_data)
    assert worker.poll() is None
    assert _send(amqp_url, "tasks.maintenance.heartbeat").get(timeout=60)["redis_ping"] is True
    assert worker.poll() is None
    return row


@pytest.mark.parametrize(
    ("name", "args"),
    [
        pytest.param("tasks.no_such_task", [], id="unknown-task"),
        pytest.param("tasks.maintenance.heartbeat", ["one too many"], id="wrong-arguments"),
    ],
)
def test_a_poison_task_message_is_archived(
    worker: subprocess.Popen[str], engine: Engine, amqp_url: str, name: str, args: list[Any]
) -> None:
    marker = f"amqp-poison-{uuid.uuid4().hex}"

    result = _send(amqp_url, name, args=[marker, *args], kwargs={"token": SECRET})

    row = _assert_archived_then_consuming(engine, marker, worker, amqp_url)
    assert row.job_id == result.id and row.job_type == name


@pytest.mark.parametrize(
    ("body", "with_task"),
    [
        pytest.param(b'{{"unterminated {marker}', True, id="non-json-body"),
        pytest.param(b'{{"event": "{marker}"}}', False, id="not-a-task-message"),
    ],
)
def test_an_undecodable_message_is_archived(
    worker: subprocess.Popen[str], engine: Engine, amqp_url: str, body: bytes, with_task: bool
) -> None:
    marker = f"amqp-poison-{uuid.uuid4().hex}"
    headers = {"task": "tasks.maintenance.heartbeat", "id": marker} if with_task else {}

    _publish_raw(amqp_url, body.decode().format(marker=marker).encode(), headers)

    _assert_archived_then_consuming(engine, marker, worker, amqp_url)


def test_two_identical_messages_without_an_id_share_one_archive_entry(
    worker: subprocess.Popen[str], engine: Engine, amqp_url: str
) -> None:
    # RabbitMQ's delivery tags are per-channel counters, not message ids (AMQP 0-9-1,
    # basic.deliver), so an id-less poison is keyed by its body: identical bodies are one entry
    # (on Redis, whose tags are UUIDs, they are two: test_poison_messages).
    marker = f"amqp-poison-{uuid.uuid4().hex}"
    body = json.dumps({"event": marker}).encode()

    for _ in range(2):
        _publish_raw(amqp_url, body, {})

    # Both were consumed before the heartbeat behind them ran (one queue, in order).
    row = _assert_archived_then_consuming(engine, marker, worker, amqp_url)
    assert [r.id for r in _archived(engine, marker)] == [row.id]
    assert row.job_id.startswith("poison-")
