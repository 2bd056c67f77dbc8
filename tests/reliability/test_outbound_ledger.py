"""The outbound ledger (issue 11, point 1): a message the broker lost is delivered after the sweep.

Lost messages are real ones: published with no worker running, then purged from the broker
before any worker took them. The sweep runs in this process with a 1 s queue bound; the
deliveries go to a real HTTP receiver from a real worker, and each arrival is counted by its
``webhook-id``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from celery.result import AsyncResult
from sqlalchemy import Engine, select

from models import FailedJobArchive, FailureCategory, OutboundMessage
from syncguard.db import service_session
from syncguard.settings import get_settings
from tasks import app
from tasks.outbound.delivery import publish_event, register_endpoint
from tasks.outbound.ledger import overdue_messages, recover, recover_outbound_messages
from tests.factories import make_business
from tests.providers import Reply, ScriptedServer, scripted_server
from tests.sync_support import eventually
from tests.worker import purge_queues, running_worker

#: A message quiet 1 s past its expected start is overdue (the product's bound is 600 s).
LEDGER_ENV = {"SYNCGUARD_OUTBOUND_QUEUE_BOUND_S": "1", "SYNCGUARD_OUTBOUND_TIMEOUT_S": "5"}


@pytest.fixture(autouse=True)
def ledger_settings() -> Iterator[None]:
    """This process (publisher and sweep) on the short bound; an empty broker before and after."""
    purge_queues()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in LEDGER_ENV.items():
            patch.setenv(name, value)
        get_settings.cache_clear()
        yield
    get_settings.cache_clear()
    purge_queues()


@pytest.fixture
def receiver() -> Iterator[ScriptedServer]:
    with scripted_server() as server:
        server.handler = lambda _seen: Reply(204)
        yield server


@pytest.fixture
def business_id(engine: Engine, receiver: ScriptedServer) -> uuid.UUID:
    with service_session(engine) as session:
        business = make_business(session).id
    register_endpoint(business, receiver.url + "/hook", ["sync.completed"])
    return business


def _row(engine: Engine, message_id: str) -> OutboundMessage:
    with service_session(engine) as session:
        row = session.get(OutboundMessage, message_id, populate_existing=True)
        assert row is not None
        return row


def _arrivals(receiver: ScriptedServer, message_id: str) -> int:
    return sum(1 for seen in receiver.requests if seen.headers.get("webhook-id") == message_id)


def _lost_message(business_id: uuid.UUID) -> str:
    """Publish an event with no worker running, then lose its message from the broker."""
    [message_id] = publish_event(business_id, "sync.completed", {"store": "s-1"})
    assert purge_queues() >= 1
    return message_id


def _delivered(engine: Engine, message_id: str) -> bool:
    return _row(engine, message_id).status == "delivered"


def test_a_delivery_leaves_a_terminal_row(
    engine: Engine, business_id: uuid.UUID, receiver: ScriptedServer
) -> None:
    with running_worker(concurrency=2, env=LEDGER_ENV):
        [message_id] = publish_event(business_id, "sync.completed", {"store": "s-1"})
        eventually(lambda: _delivered(engine, message_id), timeout_s=30)
    row = _row(engine, message_id)
    assert (row.status, row.attempt, row.recoveries) == ("delivered", 1, 0)
    assert row.business_id == business_id
    assert _arrivals(receiver, message_id) == 1
    assert recover_outbound_messages([business_id]) == {"recovered": 0, "exhausted": 0}


def test_a_message_the_broker_lost_is_delivered_once_after_the_sweep(
    engine: Engine, business_id: uuid.UUID, receiver: ScriptedServer
) -> None:
    message_id = _lost_message(business_id)
    assert _row(engine, message_id).status == "queued"  # recorded before it was published

    recovered = eventually(
        lambda: recover_outbound_messages([business_id])["recovered"], timeout_s=15
    )
    assert recovered == 1
    with running_worker(concurrency=2, env=LEDGER_ENV, purge_first=False):
        eventually(lambda: _delivered(engine, message_id), timeout_s=30)
    assert _arrivals(receiver, message_id) == 1
    assert _row(engine, message_id).recoveries == 1


def test_two_sweeps_racing_recover_a_message_once(
    engine: Engine, business_id: uuid.UUID, receiver: ScriptedServer
) -> None:
    message_id = _lost_message(business_id)
    [candidate] = eventually(
        lambda: [m for m in overdue_messages([business_id]) if m.id == message_id], timeout_s=15
    )
    with ThreadPoolExecutor(max_workers=2) as pool:  # two Beats read the same row at once
        outcomes = list(pool.map(recover, [candidate, candidate]))
    assert sorted(outcomes, key=str) == [None, "recovered"]
    with running_worker(concurrency=2, env=LEDGER_ENV, purge_first=False):
        eventually(lambda: _delivered(engine, message_id), timeout_s=30)
    assert _arrivals(receiver, message_id) == 1
    assert _row(engine, message_id).recoveries == 1


def test_the_original_of_a_recovered_message_is_stale_and_not_delivered_again(
    engine: Engine, business_id: uuid.UUID, receiver: ScriptedServer
) -> None:
    # The original stays in the broker (a slow queue, not a lost message) while the sweep
    # re-publishes it: a worker then receives both, and the ledger lets one through.
    [message_id] = publish_event(business_id, "sync.completed", {"store": "s-1"})
    original = _row(engine, message_id).celery_task_id
    eventually(lambda: recover_outbound_messages([business_id])["recovered"], timeout_s=15)
    assert _row(engine, message_id).celery_task_id != original
    with running_worker(concurrency=2, env=LEDGER_ENV, purge_first=False):
        assert AsyncResult(original, app=app).get(timeout=30) == {"status": "stale"}
        eventually(lambda: _delivered(engine, message_id), timeout_s=30)
    assert _arrivals(receiver, message_id) == 1


def test_a_message_recovered_too_often_is_archived(
    engine: Engine, business_id: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNCGUARD_OUTBOUND_MAX_RECOVERIES", "0")
    get_settings.cache_clear()
    message_id = _lost_message(business_id)
    eventually(lambda: recover_outbound_messages([business_id])["exhausted"], timeout_s=15)
    assert _row(engine, message_id).status == "archived"
    with service_session(engine) as session:
        [entry] = session.scalars(
            select(FailedJobArchive).where(FailedJobArchive.business_id == business_id)
        )
        assert entry.failure_category == FailureCategory.RECOVERY_EXHAUSTED
        assert entry.job_data["kwargs"]["message_id"] == message_id
    assert recover_outbound_messages([business_id]) == {"recovered": 0, "exhausted": 0}
