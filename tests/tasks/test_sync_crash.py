"""A worker child SIGKILLed in the middle of a multi-page sync: resume from the checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator

import psutil
import pytest
from sqlalchemy import Engine

from models import Provider, SyncJob, SyncJobStatus
from providers.emulator.runner import EmulatorHandle, running_emulator
from syncguard.db import service_session
from tasks.sync.requests import request_sync
from tests.sync_support import (
    connect_store,
    emulator_env,
    eventually,
    local_copy,
    mailbox_copy,
    wait_for_job,
)
from tests.worker import running_worker

MESSAGES, PAGE = 40, 5


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


@pytest.fixture(scope="module")
def worker(emulator: EmulatorHandle) -> Iterator[subprocess.Popen[str]]:
    env = {**emulator_env(emulator), "SYNCGUARD_SYNC_PAGE_SIZE": str(PAGE)}
    env["SYNCGUARD_SYNC_MAX_PAGES_PER_RUN"] = "100"  # one long run: the kill lands inside it
    with running_worker(concurrency=1, env=env) as proc:
        yield proc


def _pages_done(engine: Engine, job_id: object) -> int:
    with service_session(engine) as session:
        job = session.get(SyncJob, job_id)
        return job.pages_processed if job else 0


def test_a_killed_worker_resumes_from_its_checkpoint(
    engine: Engine, emulator: EmulatorHandle, worker: subprocess.Popen[str]
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
    for i in range(MESSAGES):
        mailbox.add(f"order {i}")
    mailbox.faults(slow_ms=40)  # each page takes a while, so the kill lands mid-listing
    job_id = request_sync(store_id)
    assert job_id is not None

    eventually(lambda: _pages_done(engine, job_id) >= 2)
    [child] = psutil.Process(worker.pid).children()
    os.kill(child.pid, signal.SIGKILL)
    pages_at_kill = _pages_done(engine, job_id)

    job = wait_for_job(engine, job_id, timeout_s=90)
    mailbox.faults()
    assert job.status is SyncJobStatus.SUCCEEDED and job.attempts >= 2
    assert pages_at_kill < MESSAGES // PAGE  # the kill did land mid-listing
    assert local_copy(engine, store_id) == mailbox_copy(mailbox, Provider.GMAIL)
    # Resumed, not restarted: at most the page in flight at the kill was fetched twice.
    fetched = mailbox.stats()["requests"]["gmail.messages.get"]
    assert MESSAGES <= fetched <= MESSAGES + PAGE
    assert job.messages_upserted <= MESSAGES + PAGE
