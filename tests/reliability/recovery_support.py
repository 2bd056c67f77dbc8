"""Workers in a process group of their own (so a test can SIGKILL the whole group), the recovery
sweep on a timer, the recovery settings the tests run with, and the ledger checks every recovery
test ends on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine

from models import SyncJob
from providers.emulator.runner import EmulatorHandle
from syncguard.settings import get_settings
from tasks.audit import audit_jobs
from tasks.queues import QUEUE_NAMES
from tasks.recovery import recover_sync_jobs
from tasks.sync.requests import sync_flight
from tests.sync_support import FINAL, emulator_env, jobs_of
from tests.worker import READY_TIMEOUT_S, purge_queues, running_worker, stop

#: Short recovery settings (the product's defaults stay production-sensible): a 3 s lease, a
#: 10 s queue bound (> lease + sweep, as in production), a 1 s sweep, backoff capped at 2 s.
RECOVERY_ENV = {
    "SYNCGUARD_SYNC_LEASE_S": "3",
    "SYNCGUARD_SYNC_QUEUE_BOUND_S": "10",
    "SYNCGUARD_SYNC_RECOVERY_SWEEP_S": "1",
    "SYNCGUARD_MAX_BACKOFF_S": "2",
    "SYNCGUARD_SYNC_PAGE_SIZE": "4",
    "SYNCGUARD_SYNC_MAX_PAGES_PER_RUN": "2",
}


@contextmanager
def recovery_settings(**extra: str) -> Iterator[None]:
    """This process's settings (the sweep run in-process) as the workers' ones."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**RECOVERY_ENV, **extra}.items():
            patch.setenv(name, value)
        get_settings.cache_clear()
        try:
            yield
        finally:
            get_settings.cache_clear()
    get_settings.cache_clear()


@contextmanager
def recovery_worker(emulator: EmulatorHandle) -> Iterator[None]:
    """One worker on ``emulator`` with the short recovery settings (this process too); the
    queues are purged before and after, so a module's leftovers reach no other module."""
    purge_queues()
    with recovery_settings(), running_worker(env={**emulator_env(emulator), **RECOVERY_ENV}):
        yield
    purge_queues()


@contextmanager
def group_worker(
    env: dict[str, str],
    *,
    queues: tuple[str, ...] = QUEUE_NAMES,
    concurrency: int = 1,
    purge_first: bool = False,
) -> Iterator[subprocess.Popen[str]]:
    """``celery -A tasks worker`` leading a session of its own: ``kill_group`` ends it all."""
    if purge_first:
        purge_queues()
    name = f"recovery-{uuid.uuid4().hex[:6]}@%h"
    argv = [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-l", "info", "-P", "prefork"]
    argv += ["-c", str(concurrency), "-n", name, "-Q", ",".join(queues)]
    argv += ["--without-mingle", "--without-gossip", "--without-heartbeat"]
    log_path = Path(tempfile.mkstemp(prefix="recovery-worker-", suffix=".log")[1])
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    try:
        _wait_for(proc, log_path, " ready.")
        yield proc
    finally:
        if proc.poll() is None:
            stop(proc)
        sys.stderr.write(f"[worker log: {log_path}]\n")


@contextmanager
def sweeping(store_ids: list[uuid.UUID]) -> Iterator[None]:
    """The recovery sweep every ``SYNCGUARD_SYNC_RECOVERY_SWEEP_S``, as Beat runs it, over the
    stores ``store_ids`` holds at each sweep (only those: other test modules' leftover jobs stay
    out of this test's workers)."""
    period_s = float(RECOVERY_ENV["SYNCGUARD_SYNC_RECOVERY_SWEEP_S"])
    done = threading.Event()

    def loop() -> None:
        while not done.wait(period_s):
            if store_ids:
                recover_sync_jobs([str(s) for s in store_ids])

    thread = threading.Thread(target=loop, name="recovery-sweep", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=30)


def kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the worker and every child it forked at once (node loss, the OOM killer)."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def pool_children(proc: subprocess.Popen[str]) -> list[int]:
    """The worker's pool processes (its direct children), from /proc."""
    path = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    return [int(pid) for pid in path.read_text().split()]


def unsettled(engine: Engine, store_ids: list[uuid.UUID]) -> list[str]:
    """What keeps the ledger from being settled: jobs not terminal, stores still pending, and
    whatever ``syncguard audit`` (tasks/audit.py) finds stuck."""
    problems = [
        f"audit: {v.kind} {v.subject}: {v.detail}" for v in audit_jobs(store_ids).violations
    ]
    for store_id in store_ids:
        for job in jobs_of(engine, store_id):
            if job.status not in FINAL:
                problems.append(f"job {job.id} of store {store_id} is {job.status}")
        if (holder := sync_flight().holder(str(store_id))) is not None:
            problems.append(f"store {store_id} still pending on {holder}")
    return problems


def job(engine: Engine, job_id: uuid.UUID) -> SyncJob:
    """The job row as it is now."""
    from syncguard.db import service_session

    with service_session(engine) as session:
        row = session.get(SyncJob, job_id)
        assert row is not None
        return row


def _wait_for(proc: subprocess.Popen[str], log_path: Path, marker: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while marker not in log_path.read_text():
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError(f"not ready:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.1)
