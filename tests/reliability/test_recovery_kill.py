"""Worker SIGKILL, whole group and single child, once and several times in a row (issue 11).

Real ``celery -A tasks worker`` processes in sessions of their own, the recovery sweep every
second (Beat's task, run on a timer over the test's stores), PostgreSQL, Redis and the provider
emulator over HTTP. Each test
ends on the ledger: every job terminal, no store pending, the local copy equal to the mailbox.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from functools import partial

import pytest
from sqlalchemy import Engine

from models import FailedJobArchive, Provider, SyncJobStatus, SyncTrigger
from providers.emulator.runner import EmulatorHandle, running_emulator
from syncguard.db import service_session
from tasks.queues import SYNC, WEBHOOKS
from tasks.sync.requests import request_sync
from tests.reliability.recovery_support import (
    RECOVERY_ENV,
    group_worker,
    job,
    kill_group,
    pool_children,
    recovery_settings,
    sweeping,
    unsettled,
)
from tests.sync_support import (
    connect_store,
    emulator_env,
    eventually,
    jobs_of,
    local_copy,
    mailbox_copy,
    wait_for_job,
)
from tests.worker import purge_queues

#: The recovery bound the tests hold the sweep to: lease + one sweep period, seconds...
BOUND_S = float(RECOVERY_ENV["SYNCGUARD_SYNC_LEASE_S"]) + float(
    RECOVERY_ENV["SYNCGUARD_SYNC_RECOVERY_SWEEP_S"]
)
#: ...plus the sweep's own run and its timer's drift on a loaded machine, seconds.
BEAT_SLACK_S = 2.0


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


@pytest.fixture(scope="module")
def env(emulator: EmulatorHandle) -> Iterator[dict[str, str]]:
    purge_queues()
    with recovery_settings():
        yield {**emulator_env(emulator), **RECOVERY_ENV}
    purge_queues()


@pytest.fixture
def swept() -> Iterator[list[uuid.UUID]]:
    """Stores the recovery sweep runs over during the test (the test adds its own)."""
    stores: list[uuid.UUID] = []
    with sweeping(stores):
        yield stores


def _running_with_a_page(engine: Engine, job_id: uuid.UUID) -> bool:
    row = job(engine, job_id)
    return row.status is SyncJobStatus.RUNNING and row.pages_processed >= 1


def _archived(engine: Engine, store_id: uuid.UUID) -> int:
    with service_session(engine) as session:
        return session.query(FailedJobArchive).filter_by(store_id=store_id).count()


def test_a_sync_whose_whole_worker_group_was_killed_is_recovered_within_the_bound(
    engine: Engine, emulator: EmulatorHandle, env: dict[str, str], swept: list[uuid.UUID]
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
    swept.append(store_id)
    for i in range(24):  # six pages of four, two per run: several continuations
        mailbox.add(f"order {i}")
    mailbox.faults(slow_ms=100)
    with group_worker(env, queues=(SYNC, WEBHOOKS)) as doomed:
        first = request_sync(store_id)
        assert first is not None
        eventually(lambda: _running_with_a_page(engine, first), timeout_s=60)
        kill_group(doomed)
    killed_at = time.monotonic()
    last_commit = job(engine, first).updated_at
    late = mailbox.add("arrived while the store's worker was dead")
    assert request_sync(store_id) is None  # folded into the dead job: it must still run

    recovered = eventually(lambda: (row := job(engine, first)).recoveries >= 1 and row, 60)
    ledger_blocked_s = (recovered.eta - last_commit).total_seconds()
    with group_worker(env, queues=(SYNC, WEBHOOKS)):
        eventually(lambda: job(engine, first).status is SyncJobStatus.SUCCEEDED, 60)
        resumed_s = time.monotonic() - killed_at
        eventually(lambda: not unsettled(engine, [store_id]), timeout_s=60)
        follow_ups = [j for j in jobs_of(engine, store_id) if j.id != first]
        nxt = request_sync(store_id)  # the store is not blocked: the next request runs
        assert nxt is not None
        assert wait_for_job(engine, nxt).status is SyncJobStatus.SUCCEEDED
    mailbox.faults()
    print(
        f"\n[figures] group kill: recovered {ledger_blocked_s:.1f}s after the last page "
        f"(bound {BOUND_S:.0f}s + {BEAT_SLACK_S:.0f}s); job finished {resumed_s:.1f}s "
        f"after the kill (includes a new worker's start); recoveries {recovered.recoveries}"
    )
    assert [j.trigger for j in follow_ups] == [SyncTrigger.FOLLOW_UP]
    assert follow_ups[0].status is SyncJobStatus.SUCCEEDED
    assert job(engine, first).recoveries == 1
    assert late in local_copy(engine, store_id)
    assert local_copy(engine, store_id) == mailbox_copy(mailbox, Provider.GMAIL)
    assert _archived(engine, store_id) == 0
    assert ledger_blocked_s <= BOUND_S + BEAT_SLACK_S


def test_a_message_the_broker_lost_is_republished_within_the_queue_bound(
    engine: Engine, emulator: EmulatorHandle, env: dict[str, str], swept: list[uuid.UUID]
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
    swept.append(store_id)
    mailbox.add("hello")
    job_id = request_sync(store_id)
    assert job_id is not None
    purge_queues()  # the broker lost it before any worker took it
    published = job(engine, job_id).eta

    recovered = eventually(lambda: (row := job(engine, job_id)).recoveries >= 1 and row, 60)
    waited_s = (recovered.eta - published).total_seconds()
    with group_worker(env):
        final = wait_for_job(engine, job_id)
        eventually(lambda: not unsettled(engine, [store_id]))
    bound_s = float(RECOVERY_ENV["SYNCGUARD_SYNC_QUEUE_BOUND_S"]) + float(
        RECOVERY_ENV["SYNCGUARD_SYNC_RECOVERY_SWEEP_S"]
    )
    print(f"\n[figures] lost message: re-published {waited_s:.1f}s after (bound {bound_s:.0f}s)")
    assert final.status is SyncJobStatus.SUCCEEDED, final.error_message
    assert local_copy(engine, store_id) == mailbox_copy(mailbox, Provider.GMAIL)
    assert waited_s <= bound_s + BEAT_SLACK_S


@pytest.mark.parametrize(
    "fault",
    [
        {"server_error": {"status": 503, "count": 1, "retry_after": 2}},  # a retry countdown
        {"throttle_429": {"count": 1, "retry_after": 2}},  # a deferral countdown
    ],
    ids=["retry", "deferral"],
)
def test_a_child_killed_while_its_worker_holds_a_countdown_loses_nothing(
    engine: Engine, emulator: EmulatorHandle, env: dict[str, str], fault: dict[str, object]
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
    for i in range(3):
        mailbox.add(f"order {i}")
    with group_worker(env, concurrency=1) as worker:
        mailbox.faults(**fault)
        job_id = request_sync(store_id)
        assert job_id is not None
        waiting = (SyncJobStatus.QUEUED, SyncJobStatus.DEFERRED)
        eventually(lambda: job(engine, job_id).status in waiting and job(engine, job_id).eta)
        eventually(lambda: job(engine, job_id).error_message is not None)
        for pid in pool_children(worker):  # the countdown is held by the parent: kill the pool
            os.kill(pid, signal.SIGKILL)
        final = wait_for_job(engine, job_id)
        assert final.status is SyncJobStatus.SUCCEEDED, final.error_message
        eventually(lambda: not unsettled(engine, [store_id]))
    assert local_copy(engine, store_id) == mailbox_copy(mailbox, Provider.GMAIL)
    assert _archived(engine, store_id) == 0


def test_a_child_killed_mid_page_is_redelivered_and_finishes(
    engine: Engine, emulator: EmulatorHandle, env: dict[str, str]
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
    for i in range(12):
        mailbox.add(f"order {i}")
    mailbox.faults(slow_ms=150)
    with group_worker(env, concurrency=1) as worker:
        job_id = request_sync(store_id)
        assert job_id is not None
        eventually(lambda: _running_with_a_page(engine, job_id), timeout_s=60)
        for pid in pool_children(worker):
            os.kill(pid, signal.SIGKILL)  # task_reject_on_worker_lost hands the message back
        final = wait_for_job(engine, job_id)
        mailbox.faults()
        eventually(lambda: not unsettled(engine, [store_id]))
    assert final.status is SyncJobStatus.SUCCEEDED, final.error_message
    assert local_copy(engine, store_id) == mailbox_copy(mailbox, Provider.GMAIL)


def test_several_group_kills_in_a_row_still_end_in_one_finished_job(
    engine: Engine, emulator: EmulatorHandle, env: dict[str, str], swept: list[uuid.UUID]
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
    swept.append(store_id)
    for i in range(32):  # eight pages: room for both kills between pages
        mailbox.add(f"order {i}")
    mailbox.faults(slow_ms=100)
    first = request_sync(store_id)
    assert first is not None
    # Two: the second recovers a job the sweep already recovered once (its fence and count
    # carried over), which is what "in a row" adds to the single kill above; a third kill
    # would take the same path again at the cost of a worker start and a queue bound.
    kills = 2
    for n in range(kills):
        _kill_between_pages(engine, env, first)
        eventually(partial(_recovered, engine, first, n + 1), timeout_s=60)
    mailbox.faults()
    with group_worker(env, queues=(SYNC, WEBHOOKS)):
        final = wait_for_job(engine, first, timeout_s=90)
        eventually(lambda: not unsettled(engine, [store_id]), timeout_s=60)
    print(
        f"\n[figures] {kills} group kills: recoveries {final.recoveries}, "
        f"pages {final.pages_processed}"
    )
    assert final.status is SyncJobStatus.SUCCEEDED, final.error_message
    assert final.recoveries == kills
    assert local_copy(engine, store_id) == mailbox_copy(mailbox, Provider.GMAIL)
    assert _archived(engine, store_id) == 0


def _kill_between_pages(engine: Engine, env: dict[str, str], job_id: uuid.UUID) -> None:
    """Start a worker, let it commit one more page of the job, then SIGKILL its group."""
    pages = job(engine, job_id).pages_processed
    with group_worker(env, queues=(SYNC, WEBHOOKS)) as doomed:
        eventually(partial(_paged_past, engine, job_id, pages), timeout_s=60)
        kill_group(doomed)


def _paged_past(engine: Engine, job_id: uuid.UUID, pages: int) -> bool:
    row = job(engine, job_id)
    return row.status is SyncJobStatus.RUNNING and row.pages_processed > pages


def _recovered(engine: Engine, job_id: uuid.UUID, times: int) -> bool:
    return job(engine, job_id).recoveries >= times
