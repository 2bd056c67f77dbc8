"""The core flow on RabbitMQ with the worker killed mid-sync (issue 11, point 6): the broker
hands the unacknowledged message back when the worker's connection drops, a new worker (or the
recovery sweep) finishes the job, every copy converges, the audit is clean.

Workers and the driver (requests and the recovery sweep) run with ``BROKER_URL`` on a RabbitMQ
vhost of this module's own, created and deleted with ``rabbitmqctl``; PostgreSQL and the
safeguards' Redis are this run's; the emulator over HTTP.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from celery.result import AsyncResult
from sqlalchemy import Engine

from models import Provider, SyncJobStatus
from providers.emulator.runner import EmulatorHandle, running_emulator
from tasks import app
from tests.providers import Mailbox
from tests.reliability.fault_support import figures, settle
from tests.reliability.recovery_support import (
    RECOVERY_ENV,
    group_worker,
    job,
    kill_group,
    recovery_settings,
)
from tests.reliability.servers import driver
from tests.sync_support import connect_store, emulator_env, eventually

#: RabbitMQ on this machine (the CI service), guest/guest on localhost.
AMQP_SERVER = "amqp://guest:guest@127.0.0.1:5672"


def _rabbitmqctl(*args: str) -> str:
    done = subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)
    return done.stdout.decode()


@pytest.fixture(scope="module")
def amqp_url() -> Iterator[str]:
    vhost = f"syncguard-fault-{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"{AMQP_SERVER}/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


def test_a_killed_worker_s_message_is_redelivered_by_rabbitmq_and_the_jobs_end(
    engine: Engine, emulator: EmulatorHandle, amqp_url: str
) -> None:
    stores: dict[uuid.UUID, tuple[Mailbox, Provider]] = {}
    for n in range(4):
        provider = Provider.GMAIL if n % 2 else Provider.OUTLOOK
        store_id, mailbox = connect_store(engine, emulator, provider)
        for i in range(12):
            mailbox.add(f"order {n}-{i}")
        mailbox.faults(
            slow_ms=200, **({"throttle_429": {"count": 1, "retry_after": 2}} if n == 3 else {})
        )
        stores[store_id] = (mailbox, provider)
    env = {**emulator_env(emulator), **RECOVERY_ENV, "BROKER_URL": amqp_url}
    with recovery_settings(), driver(env, list(stores)) as jobs:
        with group_worker(env, concurrency=2) as doomed:
            eventually(lambda: any(_paging(engine, j) for j in jobs), timeout_s=60)
            held = [str(job(engine, j).celery_task_id) for j in jobs]
            kill_group(doomed)  # the connection drops: RabbitMQ requeues what it held
        killed_at = datetime.now(UTC)
        with group_worker(env, concurrency=2):
            settle(engine, stores, timeout_s=120)
            # Every message the dead worker held came back (a run, or a stale no-op if the
            # sweep recovered its job first): with Redis that would take the visibility timeout.
            eventually(lambda: all(AsyncResult(t, app=app).ready() for t in held), timeout_s=60)
            result = figures("RabbitMQ, worker group SIGKILL", engine, stores, killed_at)
    assert result.ok, result.violations
    assert all(AsyncResult(t, app=app).successful() for t in held)


def _paging(engine: Engine, job_id: uuid.UUID) -> bool:
    row = job(engine, job_id)
    return row.status is SyncJobStatus.RUNNING and row.pages_processed >= 1
