"""PostgreSQL (its own cluster) stopped for ~10 s while syncs run, retry and archive (issue 11,
row 3): every job still ends — succeeded, or archived for a provider that always fails — and
every other mailbox converges; the audit is clean after.

A real worker and the recovery sweep (a driver process) whose DATABASE_URL is that cluster,
the shared Redis for the safeguards and broker, the emulator over HTTP.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from models import Provider
from providers.emulator.runner import EmulatorHandle, running_emulator
from syncguard.db import dispose_engines, get_engine
from tests.providers import Mailbox
from tests.reliability.fault_support import figures, in_flight, settle
from tests.reliability.recovery_support import RECOVERY_ENV, group_worker, recovery_settings
from tests.reliability.servers import OwnPostgres, driver, own_postgres
from tests.sync_support import connect_store, emulator_env, eventually
from tests.worker import purge_queues

#: How long the jobs may take to be paging with countdowns held, seconds (a bound).
IN_FLIGHT_WITHIN_S = 60.0
#: How long PostgreSQL stays down, seconds.
DOWN_S = 10.0
#: Faults per healthy store, in turn: retries in flight when the database goes.
RETRYING: list[dict[str, object]] = [
    {"server_error": {"status": 503, "count": 2, "retry_after": 1}},
    {"throttle_429": {"count": 1, "retry_after": 2}},
]


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


@pytest.fixture
def database() -> Iterator[tuple[OwnPostgres, Engine]]:
    """The cluster, and this process's default engine pointed at it (the audit reads it)."""
    with own_postgres() as server, recovery_settings(DATABASE_URL=server.url):
        dispose_engines()
        try:
            yield server, get_engine(server.url)
        finally:
            dispose_engines()


def test_postgres_stopped_mid_run_loses_no_job(
    emulator: EmulatorHandle, database: tuple[OwnPostgres, Engine]
) -> None:
    server, engine = database
    healthy: dict[uuid.UUID, tuple[Mailbox, Provider]] = {}
    for n in range(6):
        store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
        for i in range(10):
            mailbox.add(f"order {n}-{i}")
        mailbox.faults(slow_ms=200, **(RETRYING[n % 2] if n < 4 else {}))
        healthy[store_id] = (mailbox, Provider.GMAIL)
    failing = []
    for _ in range(2):  # always 500: retried, then archived while the database may be down
        store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
        mailbox.add("never fetched")
        mailbox.faults(server_error={"status": 500, "count": "always"})
        failing.append(store_id)
    env = {**emulator_env(emulator), **RECOVERY_ENV, "DATABASE_URL": server.url}
    purge_queues()
    with group_worker(env, concurrency=2), driver(env, [*healthy, *failing]) as jobs:
        assert len(jobs) == 8
        # Pages committing, retries and deferrals counting down.
        eventually(lambda: in_flight(engine, jobs), IN_FLIGHT_WITHIN_S)
        server.stop()
        time.sleep(DOWN_S)
        server.start()
        cleared_at = datetime.now(UTC)
        settle(engine, healthy, timeout_s=150, others=failing)
        result = figures("PostgreSQL stopped 10 s", engine, healthy, cleared_at, failing)
    purge_queues()
    assert result.ok, result.violations
    assert result.counts["terminal"] == result.counts["jobs"]
