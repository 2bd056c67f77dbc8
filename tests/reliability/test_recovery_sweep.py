"""The recovery sweep's ledger rules and a fault inside the lifecycle (issue 11, points 2 and 4).

Lost messages are real ones (published, then purged from the broker before any worker took
them); time passing is the job's ``eta`` moved back in the real row. Duplicate Beats are two
sweeps over the same rows at once; two workers race a message and its recovered successor.
Database faults inside the retry and archive paths are raised by PostgreSQL itself (a trigger
that fails the hook's update once), under a real worker.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from celery.result import AsyncResult
from sqlalchemy import Engine, create_engine, select, text

from models import (
    FailedJobArchive,
    FailureCategory,
    Provider,
    SyncJobStatus,
    SystemHealthMetric,
)
from providers.emulator.runner import EmulatorHandle, running_emulator
from safeguards.health_metrics.recorder import METRICS
from safeguards.redis_state import key
from syncguard.db import service_session
from tasks.recovery import Candidate, overdue_jobs, recover, recover_sync_jobs
from tasks.sync.requests import request_sync, sync_flight
from tests.reliability.recovery_support import (
    RECOVERY_ENV,
    group_worker,
    job,
    recovery_settings,
    unsettled,
)
from tests.sync_support import (
    connect_store,
    emulator_env,
    eventually,
    local_copy,
    mailbox_copy,
    wait_for_job,
)
from tests.worker import purge_queues


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


@pytest.fixture(scope="module")
def env(emulator: EmulatorHandle) -> Iterator[dict[str, str]]:
    purge_queues()
    with recovery_settings(SYNCGUARD_SYNC_MAX_RECOVERIES="1"):
        yield {**emulator_env(emulator), **RECOVERY_ENV}
    purge_queues()


def _overdue(engine: Engine, job_id: uuid.UUID) -> Candidate:
    """The job as the sweep sees it once its queue bound has passed."""
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE sync_jobs SET eta = now() - interval '1 hour' WHERE id = :id"),
            {"id": job_id},
        )
    found = [c for c in overdue_jobs() if c.id == job_id]
    assert len(found) == 1
    return found[0]


def _archive_of(engine: Engine, store_id: uuid.UUID) -> list[FailedJobArchive]:
    with service_session(engine) as session:
        stmt = select(FailedJobArchive).where(FailedJobArchive.store_id == store_id)
        return list(session.scalars(stmt))


def test_a_lost_message_is_recovered_and_a_job_recovered_too_often_is_archived(
    engine: Engine, emulator: EmulatorHandle, env: dict[str, str]
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
    mailbox.add("hello")
    job_id = request_sync(store_id)
    assert job_id is not None
    purge_queues()  # the broker lost the message
    assert recover(_overdue(engine, job_id)) == "recovered"
    purge_queues()  # ...and the recovered one too
    assert recover(_overdue(engine, job_id)) == "exhausted"  # max recoveries 1 in this module

    row = job(engine, job_id)
    archived = _archive_of(engine, store_id)
    assert row.status is SyncJobStatus.ARCHIVED
    assert row.recoveries == 2
    assert [a.failure_category for a in archived] == [FailureCategory.RECOVERY_EXHAUSTED]
    assert archived[0].job_data["kwargs"] == {"job_id": str(job_id)}
    assert sync_flight().holder(str(store_id)) is None  # the store is free again
    with group_worker(env):
        nxt = request_sync(store_id)
        assert nxt is not None
        assert wait_for_job(engine, nxt).status is SyncJobStatus.SUCCEEDED
        eventually(lambda: not unsettled(engine, [store_id]))
    assert local_copy(engine, store_id) == mailbox_copy(mailbox, Provider.GMAIL)


def test_a_sweep_counts_what_it_recovered_and_records_it(
    engine: Engine, emulator: EmulatorHandle, env: dict[str, str]
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
    mailbox.add("hello")
    job_id = request_sync(store_id)
    assert job_id is not None
    purge_queues()
    _overdue(engine, job_id)

    counts = recover_sync_jobs([str(store_id)])
    METRICS.flush()

    assert counts == {"recovered": 1, "exhausted": 0, "closed": 0}
    assert recover_sync_jobs([str(store_id)]) == {"recovered": 0, "exhausted": 0, "closed": 0}
    with service_session(engine) as session:
        recorded = session.scalars(
            select(SystemHealthMetric.metric_value).where(
                SystemHealthMetric.metric_name == "sync_jobs_recovered",
                SystemHealthMetric.tags["outcome"].astext == "recovered",
            )
        ).all()
    assert 1.0 in recorded
    purge_queues()  # the recovered message is not run here


def test_two_sweeps_at_once_recover_a_job_once(
    engine: Engine, emulator: EmulatorHandle, env: dict[str, str]
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
    mailbox.add("hello")
    job_id = request_sync(store_id)
    assert job_id is not None
    purge_queues()
    seen = _overdue(engine, job_id)  # both Beats read the same row
    start = threading.Barrier(2)

    def sweep() -> str | None:
        start.wait()
        return recover(seen)

    with ThreadPoolExecutor(2) as pool:
        outcomes = sorted(pool.map(lambda _: sweep(), range(2)), key=str)

    assert outcomes == [None, "recovered"]
    assert job(engine, job_id).recoveries == 1
    with group_worker(env):
        final = wait_for_job(engine, job_id)
        eventually(lambda: not unsettled(engine, [store_id]))
    assert final.status is SyncJobStatus.SUCCEEDED
    assert final.attempts == 1  # one message ran it


def test_two_workers_racing_a_message_and_its_recovered_successor_run_the_job_once(
    engine: Engine, emulator: EmulatorHandle, env: dict[str, str]
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
    for i in range(6):
        mailbox.add(f"order {i}")
    job_id = request_sync(store_id)
    assert job_id is not None
    original = job(engine, job_id).celery_task_id
    # The sweep gives the message up for lost while it is in fact still queued.
    assert recover(_overdue(engine, job_id)) == "recovered"
    successor = job(engine, job_id).celery_task_id
    assert successor != original

    with group_worker(env), group_worker(env):
        final = wait_for_job(engine, job_id)
        stale = AsyncResult(str(original)).get(timeout=30)
        eventually(lambda: not unsettled(engine, [store_id]))

    assert final.status is SyncJobStatus.SUCCEEDED
    assert final.attempts == 1
    assert stale == {"job_id": str(job_id), "stale": True}
    assert local_copy(engine, store_id) == mailbox_copy(mailbox, Provider.GMAIL)


@pytest.fixture(scope="module")
def admin(database_url: str) -> Iterator[Engine]:
    """The database's owner (the service role may not create triggers)."""
    owner = create_engine(database_url)
    yield owner
    owner.dispose()


@pytest.fixture
def failing_update(admin: Engine) -> Iterator[str]:
    """A trigger that fails, once, the update moving a chosen store's job to a chosen status.

    The budget is a sequence: nextval is not rolled back with the failed transaction.
    """
    name = f"fault_{uuid.uuid4().hex[:8]}"
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SEQUENCE {name}_seq"))
        conn.execute(
            text(
                f"""
                CREATE FUNCTION {name}() RETURNS trigger SECURITY DEFINER LANGUAGE plpgsql AS $$
                BEGIN
                  IF NEW.store_id::text = TG_ARGV[0] AND NEW.status = TG_ARGV[1]
                     AND OLD.status <> TG_ARGV[1] AND nextval('{name}_seq') = 1 THEN
                    RAISE EXCEPTION 'injected fault: the lifecycle update fails';
                  END IF;
                  RETURN NEW;
                END $$"""
            )
        )
    yield name
    with admin.begin() as conn:
        conn.execute(text(f"DROP FUNCTION {name}() CASCADE"))
        conn.execute(text(f"DROP SEQUENCE {name}_seq"))


def _fail_once(admin: Engine, name: str, store_id: uuid.UUID, status: SyncJobStatus) -> None:
    with admin.begin() as conn:
        conn.execute(
            text(
                f"CREATE TRIGGER {name} BEFORE UPDATE ON sync_jobs FOR EACH ROW "
                f"EXECUTE FUNCTION {name}('{store_id}', '{status.value}')"
            )
        )


def _fault_fired(admin: Engine, name: str) -> bool:
    """True once the trigger failed its update and then let a later one through."""
    with admin.connect() as conn:
        return bool(conn.execute(text(f"SELECT last_value >= 2 FROM {name}_seq")).scalar_one())


def test_a_database_fault_in_the_retry_hook_hands_the_message_back(
    engine: Engine,
    admin: Engine,
    emulator: EmulatorHandle,
    env: dict[str, str],
    failing_update: str,
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
    mailbox.add("hello")
    _fail_once(admin, failing_update, store_id, SyncJobStatus.QUEUED)  # on_retrying's update
    mailbox.faults(server_error={"status": 503, "count": 2})
    with group_worker(env):
        job_id = request_sync(store_id)
        assert job_id is not None
        final = wait_for_job(engine, job_id)
        eventually(lambda: not unsettled(engine, [store_id]))
    assert _fault_fired(admin, failing_update)
    assert final.status is SyncJobStatus.SUCCEEDED, final.error_message
    assert _archive_of(engine, store_id) == []
    assert local_copy(engine, store_id) == mailbox_copy(mailbox, Provider.GMAIL)


def test_a_database_fault_closing_an_archived_job_closes_it_on_redelivery(
    engine: Engine,
    admin: Engine,
    emulator: EmulatorHandle,
    env: dict[str, str],
    failing_update: str,
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
    mailbox.add("hello")
    _fail_once(admin, failing_update, store_id, SyncJobStatus.ARCHIVED)  # on_archived's update
    mailbox.faults(quota_403={"reason": "insufficientPermissions", "count": 1})
    with group_worker(env):
        job_id = request_sync(store_id)
        assert job_id is not None
        final = wait_for_job(engine, job_id)
        eventually(lambda: not unsettled(engine, [store_id]))
    assert _fault_fired(admin, failing_update)
    archived = _archive_of(engine, store_id)
    assert final.status is SyncJobStatus.ARCHIVED
    assert [a.failure_category for a in archived] == [FailureCategory.VALIDATION]
    assert final.error_message == f"archived as {archived[0].id}"


def test_a_sync_whose_redis_markers_vanished_mid_run_still_finishes(
    engine: Engine, emulator: EmulatorHandle, env: dict[str, str], redis_client: redis.Redis
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
    for i in range(12):
        mailbox.add(f"order {i}")
    mailbox.faults(slow_ms=150)
    with group_worker(env):
        job_id = request_sync(store_id)
        assert job_id is not None
        eventually(lambda: job(engine, job_id).pages_processed >= 1, timeout_s=60)
        for part in ("pending", "lease", "dirty"):  # Redis restarted without persistence
            redis_client.delete(key("sync", str(store_id), part))
        final = wait_for_job(engine, job_id)
        mailbox.faults()
        eventually(lambda: not unsettled(engine, [store_id]))
    assert final.status is SyncJobStatus.SUCCEEDED, final.error_message
    assert _archive_of(engine, store_id) == []
    assert local_copy(engine, store_id) == mailbox_copy(mailbox, Provider.GMAIL)
