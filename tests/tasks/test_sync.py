"""sync_store against the emulator over HTTP, on a real worker, real Redis and PostgreSQL."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator

import pytest
import redis
from celery.result import AsyncResult
from sqlalchemy import Engine, select, text

from models import (
    FailureCategory,
    Provider,
    Store,
    StoreStatus,
    SyncedMessage,
    SyncJob,
    SyncJobStatus,
    SyncKind,
)
from providers.emulator.runner import EmulatorHandle, running_emulator
from safeguards import ArchiveFilter, list_entries
from safeguards.health_metrics.prometheus import VALUE_REPAIRS, Family
from syncguard.db import service_session
from tasks.outbound.delivery import register_endpoint
from tasks.outbound.signing import verify
from tasks.sync.requests import request_sync
from tests.providers import Reply, ScriptedServer, Seen, scripted_server
from tests.sync_support import (
    connect_store,
    emulator_env,
    eventually,
    jobs_of,
    local_copy,
    mailbox_copy,
    wait_for_job,
)
from tests.worker import running_worker

PROVIDERS = [Provider.GMAIL, Provider.OUTLOOK]


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


@pytest.fixture(scope="module", autouse=True)
def worker(emulator: EmulatorHandle) -> Iterator[None]:
    env = {
        **emulator_env(emulator),
        # Small pages and runs so every test crosses pages and continuations.
        "SYNCGUARD_SYNC_PAGE_SIZE": "4",
        "SYNCGUARD_SYNC_MAX_PAGES_PER_RUN": "2",
        "SYNCGUARD_MAX_BACKOFF_S": "1",
        "SYNCGUARD_DEFER_HORIZON_S": "5",
    }
    with running_worker(concurrency=2, env=env):
        yield


def _sync(engine: Engine, store_id: uuid.UUID) -> uuid.UUID:
    job_id = request_sync(store_id)
    assert job_id is not None
    job = wait_for_job(engine, job_id)
    assert job.status is SyncJobStatus.SUCCEEDED, job.error_message
    return job_id


@pytest.mark.parametrize("provider", PROVIDERS)
def test_full_then_incremental_sync_converges(
    engine: Engine, emulator: EmulatorHandle, provider: Provider
) -> None:
    store_id, mailbox = connect_store(engine, emulator, provider)
    ids = [mailbox.add(f"order {i}", labels=["INBOX", "UNREAD"]) for i in range(11)]
    _sync(engine, store_id)
    assert local_copy(engine, store_id) == mailbox_copy(mailbox, provider)
    assert len(local_copy(engine, store_id)) == 11

    mailbox.add("late order", labels=["INBOX"])
    mailbox.delete(ids[0])
    mailbox.delete(ids[1])
    mailbox.relabel(ids[2], add=["Orders"], remove=["UNREAD"])
    job_id = _sync(engine, store_id)

    assert local_copy(engine, store_id) == mailbox_copy(mailbox, provider)
    [job] = [j for j in jobs_of(engine, store_id) if j.id == job_id]
    assert job.kind is SyncKind.INCREMENTAL


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_stale_cursor_triggers_a_full_resync_that_converges(
    engine: Engine, emulator: EmulatorHandle, provider: Provider
) -> None:
    store_id, mailbox = connect_store(engine, emulator, provider)
    ids = [mailbox.add(f"m{i}") for i in range(6)]
    _sync(engine, store_id)
    mailbox.delete(ids[0])
    mailbox.add("after the gap")
    mailbox.post("expire-history" if provider is Provider.GMAIL else "invalidate-delta")

    job_id = _sync(engine, store_id)

    assert local_copy(engine, store_id) == mailbox_copy(mailbox, provider)
    [job] = [j for j in jobs_of(engine, store_id) if j.id == job_id]
    assert job.kind is SyncKind.FULL  # the incremental job became a full resync


@pytest.mark.parametrize("provider", PROVIDERS)
def test_429_with_retry_after_defers_without_using_retries(
    engine: Engine, emulator: EmulatorHandle, provider: Provider
) -> None:
    store_id, mailbox = connect_store(engine, emulator, provider)
    mailbox.add("hello")
    mailbox.faults(throttle_429={"count": 2, "retry_after": 0.5})
    job_id = request_sync(store_id)
    assert job_id is not None

    job = wait_for_job(engine, job_id)
    assert job.status is SyncJobStatus.SUCCEEDED
    assert job.deferrals >= 1
    final = AsyncResult(job.celery_task_id).get(timeout=30)
    assert final["retries"] == 0
    assert local_copy(engine, store_id) == mailbox_copy(mailbox, provider)


def test_persistent_5xx_trips_the_circuit_and_archives_the_job(
    engine: Engine, emulator: EmulatorHandle
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
    mailbox.add("hello")
    mailbox.faults(server_error={"status": 503, "count": "always"})
    job_id = request_sync(store_id)
    assert job_id is not None

    job = wait_for_job(engine, job_id, timeout_s=90)
    assert job.status is SyncJobStatus.ARCHIVED
    with engine.connect() as conn:
        circuit = conn.execute(
            text(f"SELECT * FROM circuit_breaker_state WHERE store_id = '{store_id}';")
        ).one()
    assert circuit.state == "open" and circuit.trip_count >= 1
    [entry] = list_entries(ArchiveFilter(store_id=store_id))
    assert entry.failure_category in {
        FailureCategory.TRANSIENT_EXHAUSTED,
        FailureCategory.CIRCUIT_OPEN_TOO_LONG,
    }
    assert (entry.task, entry.args, entry.kwargs) == (
        "tasks.sync.sync_store",
        [str(store_id)],
        {"job_id": str(job_id)},
    )
    assert "503" in entry.failure_reason or "open" in entry.failure_reason


def test_a_revoked_grant_marks_the_store_and_archives_without_retries(
    engine: Engine, emulator: EmulatorHandle
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.OUTLOOK)
    mailbox.post("revoke")
    job_id = request_sync(store_id)
    assert job_id is not None

    job = wait_for_job(engine, job_id)
    assert job.status is SyncJobStatus.ARCHIVED and job.attempts == 1
    with service_session(engine) as session:
        store = session.get(Store, store_id)
        assert store is not None and store.status is StoreStatus.NEEDS_REAUTH
    [entry] = list_entries(ArchiveFilter(store_id=store_id))
    assert entry.failure_category is FailureCategory.AUTHENTICATION
    assert mailbox.credentials.refresh_token not in repr(entry)  # no secret in the archive


def test_a_burst_of_requests_while_syncing_causes_one_follow_up(
    engine: Engine, emulator: EmulatorHandle
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
    for i in range(8):
        mailbox.add(f"m{i}")
    mailbox.faults(slow_ms=300)  # the first sync outlasts the 50 requests by far
    first = request_sync(store_id)
    assert first is not None
    # Requests that arrive before the run starts are covered by it; these arrive during it.
    eventually(lambda: _status(engine, first) is SyncJobStatus.RUNNING)
    folded = [request_sync(store_id) for _ in range(50)]
    assert folded == [None] * 50

    wait_for_job(engine, first)
    follow_up = eventually(lambda: [j for j in jobs_of(engine, store_id) if j.id != first])
    assert [j.trigger for j in follow_up] == ["follow_up"], [
        (j.trigger, j.status, j.error_message, j.created_at) for j in jobs_of(engine, store_id)
    ]
    wait_for_job(engine, follow_up[0].id)
    mailbox.faults()
    assert len(jobs_of(engine, store_id)) == 2
    assert local_copy(engine, store_id) == mailbox_copy(mailbox, Provider.GMAIL)


def test_syncs_and_archived_jobs_are_announced_signed_to_the_business(
    engine: Engine, emulator: EmulatorHandle
) -> None:
    healthy, healthy_box = connect_store(engine, emulator, Provider.GMAIL)
    with service_session(engine) as session:
        business_id = session.get(Store, healthy).business_id  # type: ignore[union-attr]
    with scripted_server() as receiver:
        receiver.handler = lambda seen: Reply(204)
        _, secret = register_endpoint(business_id, receiver.url)
        healthy_box.add("hello")
        job_id = _sync(engine, healthy)

        [completed] = eventually(lambda: _events(receiver, "sync.completed"))
        verify(secret, completed.headers, completed.body)
        assert json.loads(completed.body)["data"]["job_id"] == str(job_id)

        broken, broken_box = connect_store(engine, emulator, Provider.GMAIL, business_id)
        broken_box.post("revoke")
        wait_for_job(engine, request_sync(broken))  # type: ignore[arg-type]
        [added] = eventually(lambda: _events(receiver, "dead_letter.added"))
        verify(secret, added.headers, added.body)
        assert json.loads(added.body)["data"]["category"] == "authentication"


def _events(receiver: ScriptedServer, event_type: str) -> list[Seen]:
    return [r for r in receiver.requests if json.loads(r.body)["type"] == event_type]


def _status(engine: Engine, job_id: uuid.UUID) -> SyncJobStatus | None:
    with service_session(engine) as session:
        job = session.get(SyncJob, job_id)
        return job.status if job else None


# -- provider data never breaks a sync (issue 10, kind 3) -----------------------------------------


def _messages(engine: Engine, store_id: uuid.UUID) -> dict[str, SyncedMessage]:
    with service_session(engine) as session:
        rows = session.scalars(select(SyncedMessage).where(SyncedMessage.store_id == store_id))
        return {row.provider_message_id: row for row in rows}


def _counter(family: Family, *labels: str) -> float:
    raw = redis.Redis.from_url(os.environ["REDIS_URL"]).hgetall(family.redis_key())
    return float(raw.get(json.dumps(list(labels), separators=(",", ":")).encode(), 0))


def test_a_nul_in_a_gmail_subject_is_stored_replaced_and_recorded(
    engine: Engine, emulator: EmulatorHandle
) -> None:
    # Given a mailbox of three messages, one whose Subject header holds a NUL
    store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
    plain = [mailbox.add("Order 1"), mailbox.add("Order 2")]
    bad = mailbox.add("Invoice\u0000 #42")
    repairs = _counter(VALUE_REPAIRS, "synced_messages", "subject", "storable")

    # When it is synced
    job_id = request_sync(store_id)
    assert job_id is not None
    job = wait_for_job(engine, job_id)

    # Then all three are stored, the subject made storable and the change noted and counted
    assert job.status is SyncJobStatus.SUCCEEDED, job.error_message
    assert job.attempts == 1
    assert AsyncResult(job.celery_task_id).get(timeout=30)["retries"] == 0
    stored = _messages(engine, store_id)
    assert set(stored) == {*plain, bad}
    assert stored[bad].subject == "Invoice\ufffd #42"
    assert stored[bad].extra == {"storable_repaired": ["subject"]}
    assert stored[plain[0]].extra == {}
    assert _counter(VALUE_REPAIRS, "synced_messages", "subject", "storable") == repairs + 1
    assert list_entries(ArchiveFilter(store_id=store_id)) == []

    # And every later full sync of the mailbox succeeds the same way
    mailbox.add("after the gap")
    mailbox.post("expire-history")
    again = _sync(engine, store_id)
    [resync] = [j for j in jobs_of(engine, store_id) if j.id == again]
    assert resync.kind is SyncKind.FULL
    assert local_copy(engine, store_id) == mailbox_copy(mailbox, Provider.GMAIL)
    assert _messages(engine, store_id)[bad].subject == "Invoice\ufffd #42"
    assert list_entries(ArchiveFilter(store_id=store_id)) == []


def test_outlook_nul_sender_category_and_an_over_long_id_are_stored_and_deleted(
    engine: Engine, emulator: EmulatorHandle
) -> None:
    # Given Graph messages with a NUL in the sender and a category, and a 300-character id
    store_id, mailbox = connect_store(engine, emulator, Provider.OUTLOOK)
    ok = mailbox.add("fine")
    odd = mailbox.add("odd", sender="Bad\u0000Name@example.com", labels=["INBOX", "Urg\u0000ent"])
    long_id = mailbox.add("long id", id="A" * 300)

    _sync(engine, store_id)

    stored = _messages(engine, store_id)
    assert len(stored) == 3 and ok in stored and odd in stored
    assert stored[odd].sender == "Bad\ufffdName@example.com"
    assert stored[odd].labels == ["Urg\ufffdent"]
    assert stored[odd].extra == {"storable_repaired": ["labels", "sender"]}
    [fitted] = [key for key in stored if key not in (ok, odd)]
    assert len(fitted) == 255 and fitted.startswith("A" * 200)
    # The emulator's conversationId is the message id here, so the thread id is fitted too
    assert stored[fitted].extra == {"storable_repaired": ["provider_message_id", "thread_id"]}

    # When the provider deletes the long-id message and fixes the category
    mailbox.delete(long_id)
    mailbox.relabel(odd, add=["Urgent"], remove=["Urg\u0000ent"])
    _sync(engine, store_id)

    # Then the delete finds the fitted id, and the repair note goes with the repaired value
    stored = _messages(engine, store_id)
    assert set(stored) == {ok, odd}
    assert stored[odd].labels == ["Urgent"]
    assert stored[odd].extra == {"storable_repaired": ["sender"]}
