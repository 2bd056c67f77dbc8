"""The safeguards' Redis (its own ``redis-server``) unreachable for a while during syncs, failing
open and failing closed (``SYNCGUARD_SAFEGUARD_FAIL_MODE``): every job still ends, every copy
converges once Redis is back, the audit is clean (issue 11, suite point 4).

A real worker and the recovery sweep (a driver process) whose REDIS_URL is that server (the
broker stays the shared one), PostgreSQL, the emulator over HTTP.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from models import Provider
from providers.emulator.runner import EmulatorHandle, running_emulator
from safeguards.redis_state import get_redis
from tests.providers import Mailbox
from tests.reliability.fault_support import figures, settle
from tests.reliability.recovery_support import RECOVERY_ENV, group_worker, recovery_settings
from tests.reliability.servers import OwnRedis, driver, own_redis
from tests.sync_support import connect_store, emulator_env
from tests.worker import purge_queues

#: How long the safeguards' Redis is unreachable, seconds.
DOWN_S = 8.0


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


@pytest.fixture
def safeguards_redis() -> Iterator[OwnRedis]:
    """Its own Redis, also this process's (the ledger checks read the pending markers)."""
    with own_redis() as server, recovery_settings(REDIS_URL=server.url):
        get_redis.cache_clear()
        try:
            yield server
        finally:
            get_redis.cache_clear()


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_jobs_end_while_the_safeguards_redis_is_unreachable(
    engine: Engine, emulator: EmulatorHandle, safeguards_redis: OwnRedis, mode: str
) -> None:
    stores: dict[uuid.UUID, tuple[Mailbox, Provider]] = {}
    for n in range(6):
        provider = Provider.GMAIL if n % 2 else Provider.OUTLOOK
        store_id, mailbox = connect_store(engine, emulator, provider)
        for i in range(10):
            mailbox.add(f"order {n}-{i}")
        mailbox.faults(slow_ms=200)
        stores[store_id] = (mailbox, provider)
    env = {
        **emulator_env(emulator),
        **RECOVERY_ENV,
        "REDIS_URL": safeguards_redis.url,
        "SYNCGUARD_SAFEGUARD_FAIL_MODE": mode,
        "SYNCGUARD_FAIL_CLOSED_RETRY_S": "2",
    }
    purge_queues()
    with group_worker(env, concurrency=2), driver(env, list(stores)) as jobs:
        assert len(jobs) == len(stores)
        time.sleep(1.5)
        safeguards_redis.kill()
        time.sleep(DOWN_S)
        safeguards_redis.start()
        cleared_at = datetime.now(UTC)
        with contextlib.suppress(AssertionError):  # what did not settle is in the audit below
            settle(engine, stores, timeout_s=120)
        result = figures(f"safeguards Redis down 8 s, fail {mode}", engine, stores, cleared_at)
    purge_queues()
    # Every job ended: none lost, none stuck.
    assert [v for v in result.violations if v.kind == "stuck_job"] == []
    assert result.counts["terminal"] == result.counts["jobs"], result.counts
    # Every copy converged: each message once, with its labels.
    assert result.ok, result.violations
