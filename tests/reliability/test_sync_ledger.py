"""The ledger before the broker, for the two sync paths that had none (issue 11, points 1 and 3):
``sync_store.delay(store_id)`` from application code without a job id, and the follow-up of a
job that ends while requests are folded into it, when publishing that follow-up fails.

A real worker, PostgreSQL, Redis and the emulator over HTTP; the recovery sweep is called as
Beat calls it, its queue bound reached by dating the rows back instead of waiting it out. The
failed publication is real: the ending runs in a process whose broker is a closed port.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select, text

from models import Provider, SyncJob, SyncJobStatus, SyncTrigger
from providers.emulator.runner import EmulatorHandle, running_emulator
from syncguard.db import service_session
from syncguard.settings import get_settings
from tasks import app
from tasks.recovery import recover_sync_jobs
from tasks.sync.jobs import create_job, follow_up_id, start_job
from tasks.sync.pipeline import sync_store
from tasks.sync.requests import request_sync, sync_flight
from tests.reliability.recovery_support import job, recovery_settings, recovery_worker, unsettled
from tests.reliability.servers import free_port
from tests.sync_support import (
    connect_store,
    eventually,
    local_copy,
    mailbox_copy,
    wait_for_job,
)


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


@pytest.fixture(scope="module")
def worker(emulator: EmulatorHandle) -> Iterator[None]:
    with recovery_worker(emulator):
        yield


def _overdue(engine: Engine, job_id: uuid.UUID) -> None:
    """Date the queued job back past its queue bound, as if its message had been lost long ago."""
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE sync_jobs SET eta = now() - interval '1 hour' WHERE id = :id"),
            {"id": job_id},
        )


def test_delay_without_a_job_id_records_the_job_before_publishing(
    engine: Engine, emulator: EmulatorHandle, worker: None
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
    mailbox.add("hello")

    result = sync_store.delay(str(store_id))

    with service_session(engine) as session:
        row = session.scalars(select(SyncJob).where(SyncJob.celery_task_id == result.id)).one()
    assert row.store_id == store_id  # recorded by the time delay() returned
    assert result.get(timeout=60)["job_id"] == str(row.id)  # the message carried its job id
    assert job(engine, row.id).status is SyncJobStatus.SUCCEEDED
    assert local_copy(engine, store_id) == mailbox_copy(mailbox, Provider.GMAIL)


def test_a_delayed_sync_whose_message_is_lost_is_run_by_the_sweep(
    engine: Engine, emulator: EmulatorHandle, worker: None
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.OUTLOOK)
    mailbox.add("hello")
    nowhere = f"lost-{uuid.uuid4().hex[:8]}"  # a queue no worker consumes: the message is lost
    result = sync_store.apply_async(args=[str(store_id)], queue=nowhere)
    try:
        with service_session(engine) as session:
            stmt = select(SyncJob.id).where(SyncJob.celery_task_id == result.id)
            job_id = session.scalars(stmt).one()
        _overdue(engine, job_id)

        with recovery_settings():
            assert recover_sync_jobs([str(store_id)])["recovered"] == 1

        assert wait_for_job(engine, job_id, timeout_s=60).status is SyncJobStatus.SUCCEEDED
        assert local_copy(engine, store_id) == mailbox_copy(mailbox, Provider.OUTLOOK)
    finally:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(nowhere)


#: Ends job ``argv[2]`` of store ``argv[1]`` as archived, as ``SyncTask.on_archived`` does.
_END_ARCHIVED = """
import sys, uuid
from models import SyncJobStatus
from tasks.sync.ending import end_job
end_job(uuid.UUID(sys.argv[1]), uuid.UUID(sys.argv[2]), SyncJobStatus.ARCHIVED,
        error_message="archived as a test entry")
"""


def test_a_follow_up_whose_publication_fails_after_its_job_ended_still_runs(
    engine: Engine, emulator: EmulatorHandle, worker: None
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.OUTLOOK)
    mailbox.add("first")
    first = request_sync(store_id)
    assert first is not None
    wait_for_job(engine, first)
    # Job A runs (this test plays its message) and a request is folded into it.
    job_a, task = uuid.uuid4(), str(uuid.uuid4())
    flight = sync_flight()
    assert flight.request(str(store_id), str(job_a))
    create_job(store_id, SyncTrigger.MANUAL, job_a, celery_task_id=task)
    assert start_job(store_id, str(job_a), task) is not None
    late = mailbox.add("late order")
    assert request_sync(store_id) is None  # folded into job A

    # Job A is archived in a process whose broker is unreachable: the follow-up's publication
    # fails right after the job ended.
    env = {**os.environ, "BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    argv = [sys.executable, "-c", _END_ARCHIVED, str(store_id), str(job_a)]
    ended = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert ended.returncode == 0, ended.stderr[-3000:]
    assert "publishing follow-up" in ended.stderr  # it did fail, and said so

    assert job(engine, job_a).status is SyncJobStatus.ARCHIVED
    follow_up = job(engine, follow_up_id(job_a))  # written with the job's end
    assert (follow_up.status, follow_up.trigger) == (SyncJobStatus.QUEUED, SyncTrigger.FOLLOW_UP)
    assert flight.holder(str(store_id)) == str(follow_up.id)  # later requests fold into it
    assert request_sync(store_id) is None

    _overdue(engine, follow_up.id)  # its message never existed: the sweep publishes it
    with recovery_settings():
        assert recover_sync_jobs([str(store_id)])["recovered"] == 1
    assert wait_for_job(engine, follow_up.id, timeout_s=60).status is SyncJobStatus.SUCCEEDED
    eventually(lambda: late in local_copy(engine, store_id), timeout_s=30)
    eventually(lambda: not unsettled(engine, [store_id]), timeout_s=60)
    assert local_copy(engine, store_id) == mailbox_copy(mailbox, Provider.OUTLOOK)


def test_a_request_folded_into_a_waiting_job_outlives_its_queue_bound(
    engine: Engine, emulator: EmulatorHandle
) -> None:
    # Job J's message is somewhere in a backlog: the sweep re-publishes J only at its first run
    # after J's expected start plus the queue bound, and the request folded into J must still be
    # pending then (its marker and dirty flag lapsed just before that sweep, and a continuation
    # re-published then ran without its follow-up: a copy short in the chaos test).
    store_id, _ = connect_store(engine, emulator, Provider.GMAIL)
    with recovery_settings():
        flight, settings = sync_flight(), get_settings()
        job_id = uuid.uuid4()
        assert flight.request(str(store_id), str(job_id))
        create_job(store_id, SyncTrigger.MANUAL, job_id, celery_task_id=str(uuid.uuid4()))
        assert request_sync(store_id) is None  # folded into J

        time.sleep(settings.sync_queue_bound_s + settings.sync_recovery_sweep_s)

        assert flight.holder(str(store_id)) == str(job_id)  # still pending when the sweep runs
        with engine.begin() as conn:  # J is not run here: it must not be recovered later
            conn.execute(
                text("UPDATE sync_jobs SET status = 'failed' WHERE id = :id"), {"id": job_id}
            )
        assert flight.release(str(store_id), str(job_id), "follow-up") is True  # fold intact
        flight.cancel(str(store_id), "follow-up")
