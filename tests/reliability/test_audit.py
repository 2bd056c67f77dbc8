"""The accounting check (tasks/audit.py, ``syncguard audit``) on real rows: a stuck job and a
missing, duplicated-in-spirit, mislabelled or deleted message are each reported; a healthy
ledger and copy pass. PostgreSQL, Redis and the emulator over HTTP; no worker needed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, func, update

from models import Provider, Store, SyncedMessage, SyncJob, SyncJobStatus, SyncKind, SyncTrigger
from providers.emulator.runner import EmulatorHandle, running_emulator
from syncguard.cli.main import main
from syncguard.db import service_session
from tasks.audit import audit_jobs, audit_mailboxes
from tests.sync_support import connect_store, mailbox_copy


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


def _job(engine: Engine, store_id: uuid.UUID, status: SyncJobStatus, age_s: float) -> uuid.UUID:
    """A job of ``status`` whose eta and last change lie ``age_s`` seconds back."""
    with service_session(engine) as session:
        store = session.get(Store, store_id)
        assert store is not None
        job = SyncJob(
            business_id=store.business_id,
            store_id=store_id,
            kind=SyncKind.INCREMENTAL,
            trigger=SyncTrigger.MANUAL,
            status=status,
            celery_task_id=str(uuid.uuid4()),
        )
        session.add(job)
        session.flush()
        job_id = job.id
    back = func.now() - timedelta(seconds=age_s)
    with service_session(engine) as session:
        session.execute(
            update(SyncJob).where(SyncJob.id == job_id).values(eta=back, updated_at=back)
        )
    return job_id


def _copy(engine: Engine, store_id: uuid.UUID, messages: dict[str, set[str]]) -> None:
    """Write ``messages`` as the store's local copy."""
    with service_session(engine) as session:
        store = session.get(Store, store_id)
        assert store is not None
        for message_id, labels in messages.items():
            session.add(
                SyncedMessage(
                    business_id=store.business_id,
                    store_id=store_id,
                    provider_message_id=message_id,
                    labels=sorted(labels),
                )
            )


def test_stuck_jobs_are_violations_and_live_ones_are_not(
    engine: Engine, emulator: EmulatorHandle
) -> None:
    store_id, _ = connect_store(engine, emulator, Provider.GMAIL)
    live_queued = _job(engine, store_id, SyncJobStatus.QUEUED, 1)
    live_running = _job(engine, store_id, SyncJobStatus.RUNNING, 1)
    done = _job(engine, store_id, SyncJobStatus.SUCCEEDED, 7200)
    stuck_queued = _job(engine, store_id, SyncJobStatus.DEFERRED, 7200)
    stuck_running = _job(engine, store_id, SyncJobStatus.RUNNING, 7200)
    del done

    result = audit_jobs([store_id])

    stuck = {v.subject for v in result.violations}
    assert stuck == {str(stuck_queued), str(stuck_running)}
    assert {v.kind for v in result.violations} == {"stuck_job"}
    assert (result.counts["jobs"], result.counts["terminal"]) == (5, 1)
    assert (result.counts["live"], result.counts["stuck"]) == (2, 2)
    assert str(live_queued) not in stuck and str(live_running) not in stuck


def test_a_healthy_ledger_passes(engine: Engine, emulator: EmulatorHandle) -> None:
    store_id, _ = connect_store(engine, emulator, Provider.GMAIL)
    _job(engine, store_id, SyncJobStatus.SUCCEEDED, 7200)
    _job(engine, store_id, SyncJobStatus.ARCHIVED, 7200)

    result = audit_jobs([store_id])

    assert result.ok, result.violations
    assert result.counts["terminal"] == 2


@pytest.mark.parametrize("provider", [Provider.GMAIL, Provider.OUTLOOK])
def test_mailbox_differences_are_violations(
    engine: Engine, emulator: EmulatorHandle, provider: Provider
) -> None:
    store_id, mailbox = connect_store(engine, emulator, provider)
    kept, missing, relabelled = (mailbox.add(f"m{i}") for i in range(3))
    truth = mailbox_copy(mailbox, provider)
    local = {kept: truth[kept], relabelled: truth[relabelled] | {"STARRED-NOT"}, "gone": set()}
    _copy(engine, store_id, local)

    result = audit_mailboxes({store_id: truth})

    found = {(v.kind, v.detail.split(":")[0]) for v in result.violations}
    assert found == {
        ("missing", f"message {missing}"),
        ("labels", f"message {relabelled}"),
        ("deleted", "message gone"),
    }
    assert (result.counts["messages"], result.counts["copied"]) == (3, 3)


def test_a_matching_copy_passes(engine: Engine, emulator: EmulatorHandle) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
    for i in range(3):
        mailbox.add(f"m{i}")
    truth = mailbox_copy(mailbox, Provider.GMAIL)
    _copy(engine, store_id, truth)

    assert audit_mailboxes({store_id: truth}).ok


def test_the_command_prints_counts_and_fails_on_a_violation(
    engine: Engine, emulator: EmulatorHandle
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
    present = mailbox.add("copied")
    mailbox.add("never copied")
    _copy(engine, store_id, {present: mailbox_copy(mailbox, Provider.GMAIL)[present]})
    stuck = _job(engine, store_id, SyncJobStatus.QUEUED, 7200)
    args = ["audit", "--store", str(store_id), "--emulator", emulator.url]

    result = CliRunner().invoke(main, args)

    assert result.exit_code != 0, result.output
    assert "stuck_job" in result.output and str(stuck) in result.output
    assert "missing" in result.output
    assert "2 violation(s)" in result.output


def test_the_command_passes_when_all_is_accounted_for(
    engine: Engine, emulator: EmulatorHandle
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.OUTLOOK)
    mailbox.add("one")
    _copy(engine, store_id, mailbox_copy(mailbox, Provider.OUTLOOK))
    _job(engine, store_id, SyncJobStatus.SUCCEEDED, 60)

    result = CliRunner().invoke(
        main, ["audit", "--store", str(store_id), "--emulator", emulator.url]
    )

    assert result.exit_code == 0, result.output
    assert "audit: ok" in result.output
