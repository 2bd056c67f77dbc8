"""A message the recovery sweep superseded must not swallow later requests (issue 11, point 3).

The race behind the chaos test's "one copy a message short": a message passes ``start_job``,
stalls past the lease before it takes the store's lease, the sweep re-publishes its job, and a
new message runs the job. The stalled message then woke up and took the lease under the job's
id, as the new message held it:

- while the new message still ran, as a fresh run it cleared the dirty flag of a request folded
  into that run, so no follow-up came and the new mail was never read (the second test; it fails
  on the code before tasks/sync/lease.py with the late message missing). The lease now names the
  message, and a message the ledger no longer names gives it back without clearing anything;
- after the job had ended, it held the lease and never released it; a later request's run
  found it held and was marked succeeded as "coalesced" into a run that would never release
  (the first test: a hold left by a message whose process died before giving it back).

Real worker, PostgreSQL, Redis and the emulator over HTTP; the stalled message's steps are the
pipeline's own calls (``start_job``, the sweep's ``recover``, the lease).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from models import Provider, SyncJobStatus, SyncTrigger
from providers.emulator.runner import EmulatorHandle, running_emulator
from tasks.recovery import overdue_jobs, recover
from tasks.sync.jobs import create_job, start_job
from tasks.sync.lease import Hold, hold
from tasks.sync.requests import request_sync, sync_flight
from tests.reliability.recovery_support import job, recovery_worker, unsettled
from tests.sync_support import (
    FINAL,
    connect_store,
    eventually,
    jobs_of,
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


def test_a_request_after_a_superseded_hold_still_reads_the_new_mail(
    engine: Engine, emulator: EmulatorHandle, worker: None
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
    mailbox.add("first")
    flight, store = sync_flight(), str(store_id)
    # Job A, its message taken by a worker (this test) that passes start_job and then stalls.
    job_a, stalled = uuid.uuid4(), str(uuid.uuid4())
    assert flight.request(store, str(job_a))
    create_job(store_id, SyncTrigger.MANUAL, job_a, celery_task_id=stalled)
    assert start_job(store_id, str(job_a), stalled) is not None
    with engine.begin() as conn:  # no page for longer than a lease: the sweep takes it over
        conn.execute(
            text("UPDATE sync_jobs SET updated_at = now() - interval '1 hour' WHERE id = :id"),
            {"id": job_a},
        )
    (candidate,) = [c for c in overdue_jobs([store]) if c.id == job_a]
    assert recover(candidate) == "recovered"
    assert wait_for_job(engine, job_a).status is SyncJobStatus.SUCCEEDED  # run by the new message
    # A stray hold under the job's id that is never given back (its process died holding it).
    assert flight.acquire(store, str(job_a))

    late = mailbox.add("late order")
    follow_up = request_sync(store_id)

    assert follow_up is not None  # job A has ended: the request is not folded into it
    eventually(lambda: late in local_copy(engine, store_id), timeout_s=60)
    eventually(lambda: not unsettled(engine, [store_id]), timeout_s=60)
    assert wait_for_job(engine, follow_up).status in FINAL


def _stalled_then_superseded(engine: Engine, store_id: uuid.UUID) -> tuple[uuid.UUID, str]:
    """Job A whose first message passed ``start_job`` and stalled; the sweep re-published it
    under a new message, which a real worker now runs. Returns (job A, the stalled task id)."""
    job_a, stalled = uuid.uuid4(), str(uuid.uuid4())
    assert sync_flight().request(str(store_id), str(job_a))
    create_job(store_id, SyncTrigger.MANUAL, job_a, celery_task_id=stalled)
    assert start_job(store_id, str(job_a), stalled) is not None  # no checkpoint yet: fresh
    with engine.begin() as conn:  # no page for longer than a lease: the sweep takes it over
        conn.execute(
            text("UPDATE sync_jobs SET updated_at = now() - interval '1 hour' WHERE id = :id"),
            {"id": job_a},
        )
    (candidate,) = [c for c in overdue_jobs([str(store_id)]) if c.id == job_a]
    assert recover(candidate) == "recovered"
    return job_a, stalled


def test_a_stale_message_cannot_clear_a_request_folded_into_the_running_job(
    engine: Engine, emulator: EmulatorHandle, worker: None
) -> None:
    # Outlook: a delta round reads the changes up to its start, so mail that arrives while it
    # runs is read only by a follow-up; 40 messages are 10 pages, 5 runs of the new message.
    store_id, mailbox = connect_store(engine, emulator, Provider.OUTLOOK)
    for i in range(40):
        mailbox.add(f"order {i}")
    mailbox.faults(slow_ms=300)
    job_a, stalled = _stalled_then_superseded(engine, store_id)
    eventually(lambda: job(engine, job_a).pages_processed >= 1)  # the new message reads

    late = mailbox.add("late order")
    assert request_sync(store_id) is None  # folded into job A, which runs
    # The stalled message wakes up and takes its next step, as sync_store does: the lease,
    # as a fresh run (its job had no checkpoint when it passed start_job).
    assert hold(store_id, job_a, stalled, fresh=True) is Hold.STALE

    assert wait_for_job(engine, job_a, timeout_s=90).status is SyncJobStatus.SUCCEEDED
    eventually(lambda: not unsettled(engine, [store_id]), timeout_s=90)
    mailbox.faults()
    assert late in local_copy(engine, store_id)
    assert local_copy(engine, store_id) == mailbox_copy(mailbox, Provider.OUTLOOK)
    follow_ups = [j for j in jobs_of(engine, store_id) if j.trigger is SyncTrigger.FOLLOW_UP]
    assert len(follow_ups) == 1  # the folded request's one follow-up
