"""No fault, yet stuck or lost: folded requests across continuations, markers whose job ended,
stale redeliveries and messages for stores that no longer exist (issue 11, rows 1, 2 and 5).

A real worker, PostgreSQL, Redis and the provider emulator over HTTP; small pages and runs so
a sync crosses several continuations.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from functools import partial

import pytest
import redis
from celery.result import AsyncResult
from sqlalchemy import Engine, select, update

from models import FailedJobArchive, FailureCategory, Provider, SyncJob, SyncJobStatus, SyncTrigger
from providers.emulator.runner import EmulatorHandle, running_emulator
from safeguards.dead_letter.archive import move_to_dead_letter_queue, replay
from safeguards.redis_state import key
from syncguard.db import service_session
from syncguard.settings import get_settings
from tasks import app
from tasks.replay import enqueue_archived
from tasks.sync.requests import request_sync, sync_flight
from tests.factories import make_business, make_store
from tests.sync_support import (
    FINAL,
    connect_store,
    emulator_env,
    eventually,
    jobs_of,
    local_copy,
    mailbox_copy,
    wait_for_job,
)
from tests.worker import running_worker

SYNC_TASK = "tasks.sync.sync_store"


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


@pytest.fixture(scope="module", autouse=True)
def worker(emulator: EmulatorHandle) -> Iterator[None]:
    env = {
        **emulator_env(emulator),
        "SYNCGUARD_SYNC_PAGE_SIZE": "4",
        "SYNCGUARD_SYNC_MAX_PAGES_PER_RUN": "2",
        "SYNCGUARD_MAX_BACKOFF_S": "1",
        "SYNCGUARD_DEFER_HORIZON_S": "5",
    }
    with running_worker(concurrency=2, env=env):
        yield


def _job(engine: Engine, job_id: uuid.UUID) -> SyncJob:
    with service_session(engine) as session:
        job = session.get(SyncJob, job_id)
        assert job is not None
        return job


def _synced(engine: Engine, store_id: uuid.UUID) -> uuid.UUID:
    job_id = request_sync(store_id)
    assert job_id is not None
    job = wait_for_job(engine, job_id)
    assert job.status is SyncJobStatus.SUCCEEDED, job.error_message
    return job_id


def _settled(engine: Engine, store_id: uuid.UUID) -> list[SyncJob] | None:
    """The store's jobs once every one has ended and nothing is pending, else None."""
    jobs = jobs_of(engine, store_id)
    idle = sync_flight().holder(str(store_id)) is None
    return jobs if idle and all(j.status in FINAL for j in jobs) else None


def test_a_request_folded_into_a_continuing_sync_gets_exactly_one_follow_up(
    engine: Engine, emulator: EmulatorHandle
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
    mailbox.add("welcome")
    initial = _synced(engine, store_id)  # the store has a cursor: the next sync is incremental
    for i in range(24):  # six pages of four, two pages per run: three runs
        mailbox.add(f"order {i}")
    mailbox.faults(slow_ms=60)
    first = request_sync(store_id)
    assert first is not None

    # Once a page is in, the run has begun reading: a request now is one it may not cover (a
    # request before that, even while the job is already running, is covered by it).
    eventually(lambda: _job(engine, first).pages_processed >= 1)
    late = mailbox.add("late order")
    folded_at = time.monotonic()
    assert request_sync(store_id) is None  # folded into the running sync

    jobs = eventually(lambda: _settled(engine, store_id), timeout_s=90)
    settled_s = time.monotonic() - folded_at
    mailbox.faults()
    follow_ups = [j for j in jobs if j.id not in (initial, first)]
    print(
        f"\n[figures] follow-ups: {len(follow_ups)}; pages of the first sync: "
        f"{_job(engine, first).pages_processed}; folded request to settled: {settled_s:.1f}s"
    )
    assert [j.trigger for j in follow_ups] == [SyncTrigger.FOLLOW_UP]
    assert _job(engine, first).pages_processed >= 3  # it did continue over several runs
    assert all(j.status is SyncJobStatus.SUCCEEDED for j in jobs)
    assert late in local_copy(engine, store_id)
    assert local_copy(engine, store_id) == mailbox_copy(mailbox, Provider.GMAIL)


def test_a_marker_left_by_a_job_that_ended_does_not_fold_requests(
    engine: Engine, emulator: EmulatorHandle
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
    mailbox.add("hello")
    ended = _synced(engine, store_id)
    # Its worker died between marking the job succeeded and clearing the marker.
    assert sync_flight().request(str(store_id), str(ended))

    job_id = request_sync(store_id)

    assert job_id is not None  # the ledger says nothing is pending: a sync is enqueued
    assert sync_flight().holder(str(store_id)) == str(job_id)
    assert wait_for_job(engine, job_id).status is SyncJobStatus.SUCCEEDED


def test_the_pending_marker_lives_for_the_queue_bound_not_for_hours(
    engine: Engine, emulator: EmulatorHandle, redis_client: redis.Redis
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
    mailbox.add("hello")
    mailbox.faults(slow_ms=300)  # the job is still pending when its marker is read
    job_id = request_sync(store_id)
    assert job_id is not None

    ttl_ms = redis_client.pttl(key("sync", str(store_id), "pending"))

    settings = get_settings()  # until the first sweep after the queue bound, a lease of slack
    live_s = settings.sync_queue_bound_s + settings.sync_recovery_sweep_s + settings.sync_lease_s
    assert 0 < ttl_ms <= live_s * 1000
    wait_for_job(engine, job_id)
    mailbox.faults()


def test_a_marker_of_a_job_still_queued_folds_requests(engine: Engine) -> None:
    with service_session(engine) as session:
        store = make_store(session, make_business(session))
        queued = SyncJob(store_id=store.id, kind="full", trigger="manual", checkpoint={})
        session.add(queued)
        session.flush()
        store_id, queued_id = store.id, queued.id
    flight = sync_flight()
    assert flight.request(str(store_id), str(queued_id))
    try:
        assert request_sync(store_id) is None
        assert request_sync(store_id) is None
        assert flight.holder(str(store_id)) == str(queued_id)
    finally:
        flight.cancel(str(store_id))
        with service_session(engine) as session:
            session.execute(update(SyncJob).where(SyncJob.id == queued_id).values(status="failed"))


def test_a_redelivered_message_of_a_job_that_ended_is_a_no_op(
    engine: Engine, emulator: EmulatorHandle
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
    mailbox.add("first")
    job_id = _synced(engine, store_id)
    before = _job(engine, job_id)
    mailbox.add("second")  # a run of the stale message would copy it

    stale = app.send_task(SYNC_TASK, args=[str(store_id)], kwargs={"job_id": str(job_id)})

    assert stale.get(timeout=30) == {"job_id": str(job_id), "stale": True}
    after = _job(engine, job_id)
    assert (after.status, after.attempts, after.finished_at, after.celery_task_id) == (
        before.status,
        before.attempts,
        before.finished_at,
        before.celery_task_id,
    )
    assert len(local_copy(engine, store_id)) == 1
    assert [j.id for j in jobs_of(engine, store_id)] == [job_id]


def test_a_replay_of_an_archived_sync_runs_it_again(
    engine: Engine, emulator: EmulatorHandle
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
    mailbox.add("kept")
    job_id = _synced(engine, store_id)
    with service_session(engine) as session:  # as if its last attempt had been archived
        session.execute(
            update(SyncJob).where(SyncJob.id == job_id).values(status=SyncJobStatus.ARCHIVED)
        )
    mailbox.add("missed")
    entry_id = move_to_dead_letter_queue(
        uuid.uuid4().hex,
        SYNC_TASK,
        "TransientFailure: 503",
        5,
        {"task": SYNC_TASK, "args": [str(store_id)], "kwargs": {"job_id": str(job_id)}},
        failure_category=FailureCategory.TRANSIENT_EXHAUSTED,
        store_id=store_id,
    )

    replayed = replay(entry_id, enqueue=enqueue_archived, replayed_by="test")

    assert AsyncResult(replayed.replay_task_id).get(timeout=30)["job_id"] == str(job_id)
    assert _job(engine, job_id).status is SyncJobStatus.SUCCEEDED
    assert local_copy(engine, store_id) == mailbox_copy(mailbox, Provider.GMAIL)


def _archive_rows(job_id: str) -> list[FailedJobArchive]:
    with service_session() as session:
        stmt = select(FailedJobArchive).where(FailedJobArchive.job_id == job_id)
        return list(session.scalars(stmt))


def test_messages_for_a_store_that_does_not_exist_are_archived_once_and_free_the_worker(
    engine: Engine, emulator: EmulatorHandle
) -> None:
    # Stores deleted while their work was queued (their jobs went with them).
    ghosts = [uuid.uuid4() for _ in range(3)]
    sent = [
        app.send_task(SYNC_TASK, args=[str(ghosts[0])], kwargs={"job_id": str(uuid.uuid4())}),
        app.send_task(SYNC_TASK, args=[str(ghosts[1])]),
        app.send_task("tasks.webhooks.create_subscription", args=[str(ghosts[2])]),
    ]
    # A renewal of a subscription deleted with its store: no store is known at all.
    renewal = app.send_task("tasks.webhooks.renew_subscription", args=[str(uuid.uuid4())])
    for result in [*sent, renewal]:
        eventually(partial(_archive_rows, result.id), timeout_s=60)

    # Two worker slots and three poison messages: work still gets done.
    store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
    mailbox.add("after the ghosts")
    _synced(engine, store_id)

    for ghost, result in zip(ghosts, sent, strict=True):
        [row] = _archive_rows(result.id)
        assert row.failure_category is FailureCategory.VALIDATION
        assert row.store_id is None and row.business_id is None
        assert row.error_context["dangling_references"] == {"store_id": str(ghost)}
        assert row.job_data["args"] == [str(ghost)]
        assert "does not exist" in row.failure_reason
        assert row.updated_at == row.created_at  # archived once, never redelivered
        assert result.state == "FAILURE"
    [row] = _archive_rows(renewal.id)
    assert row.failure_category is FailureCategory.VALIDATION and row.store_id is None
    assert "does not exist" in row.failure_reason and row.updated_at == row.created_at
