"""The broker Redis (its own ``redis-server``, AOF with fsync always) SIGKILLed and restarted
from its log while 8 syncs are in flight, some held by the worker with a retry or deferral
countdown (issue 11, row 4): nothing is lost, no store stays blocked beyond the recovery bound.

A real worker whose BROKER_URL is that Redis (the safeguards keep the shared one), the recovery
sweep in a driver process on the same broker, the emulator over HTTP; the audit after.
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
from tests.providers import Mailbox
from tests.reliability.fault_support import figures, in_flight, settle
from tests.reliability.recovery_support import RECOVERY_ENV, group_worker, recovery_settings
from tests.reliability.servers import OwnRedis, driver, own_redis
from tests.sync_support import connect_store, emulator_env, eventually

#: Faults on some mailboxes so their jobs sit in the worker with a countdown at the kill.
COUNTDOWNS: list[dict[str, object]] = [
    {"throttle_429": {"count": 1, "retry_after": 2}},  # a deferral
    {"throttle_429": {"count": 1, "retry_after": 2}},
    {"server_error": {"status": 503, "count": 1, "retry_after": 2}},  # a retry
    {"server_error": {"status": 503, "count": 1, "retry_after": 2}},
]
#: How long the jobs may take to be paging with countdowns held, seconds (a bound).
IN_FLIGHT_WITHIN_S = 60.0
#: How long the broker stays dead, seconds.
DOWN_S = 3.0


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


@pytest.fixture
def broker() -> Iterator[OwnRedis]:
    with own_redis() as server:
        yield server


def test_broker_redis_killed_and_restarted_from_its_aof_loses_nothing(
    engine: Engine, emulator: EmulatorHandle, broker: OwnRedis
) -> None:
    stores: dict[uuid.UUID, tuple[Mailbox, Provider]] = {}
    for n in range(8):
        store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
        for i in range(10):  # three pages of four, two per run: a continuation each
            mailbox.add(f"order {n}-{i}")
        mailbox.faults(slow_ms=150, **(COUNTDOWNS[n] if n < len(COUNTDOWNS) else {}))
        stores[store_id] = (mailbox, Provider.GMAIL)
    env = {**emulator_env(emulator), **RECOVERY_ENV, "BROKER_URL": broker.url}
    with recovery_settings(), group_worker(env, concurrency=2), driver(env, list(stores)) as jobs:
        assert len(jobs) == 8
        eventually(lambda: in_flight(engine, jobs), IN_FLIGHT_WITHIN_S)  # countdowns held
        broker.kill()
        time.sleep(DOWN_S)
        broker.start()
        cleared_at = datetime.now(UTC)
        for mailbox, _ in stores.values():
            mailbox.faults()
        settle(engine, stores, timeout_s=120)
        result = figures("broker Redis SIGKILL + AOF restart", engine, stores, cleared_at)
    assert result.ok, result.violations
