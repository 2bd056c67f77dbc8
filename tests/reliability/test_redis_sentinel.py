"""A Sentinel failover while syncs run (issue 13 point 3): the safeguards' Redis and Celery's
broker are one primary with a replica and a Sentinel (``sentinel://`` with
``SYNCGUARD_REDIS_SENTINEL_MASTER``), all started by the test on loopback ports. The test
fails the primary over mid-run (``SENTINEL FAILOVER``: the old primary keeps taking writes from
clients still connected to it until it is demoted, as in production); new mail then arrives and
syncs are requested through the new primary. Nothing is lost (the audit passes), the worker's
safeguards count their calls on the new primary, the heartbeat pings it, and garbage pushed onto
a queue there is archived (the Sentinel twin of the poison-wrapping transport) while the worker
lives on.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, Text, cast, select

from models import FailedJobArchive, FailureCategory, Provider
from providers.emulator.runner import EmulatorHandle, running_emulator
from safeguards.health_metrics import prometheus
from safeguards.rate_limit import limiter as limiter_module
from safeguards.rate_limit.limiter import RateLimiter
from safeguards.redis_state import get_redis
from syncguard.db import service_session
from syncguard.services import current_services
from syncguard.settings import get_settings
from tasks.maintenance import heartbeat
from tasks.queues import SYNC
from tests.providers import Mailbox
from tests.reliability.fault_support import figures, settle
from tests.reliability.recovery_support import RECOVERY_ENV, group_worker, recovery_settings
from tests.reliability.redis_servers import OwnSentinel, own_sentinel
from tests.reliability.servers import driver
from tests.sync_support import connect_store, emulator_env, eventually

Stores = dict[uuid.UUID, tuple[Mailbox, Provider]]


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


@pytest.fixture
def sentinel() -> Iterator[OwnSentinel]:
    with own_sentinel() as server:
        yield server


def _forget_clients() -> None:
    # Every process-wide client of the safeguards' Redis, made again from the settings.
    get_redis.cache_clear()
    current_services.cache_clear()
    limiter_module._DEFAULT.clear()
    prometheus._default_client.cache_clear()


@contextmanager
def safeguards_on(env: dict[str, str]) -> Iterator[None]:
    """This process's safeguards (the audit's lease checks, the counters read) as the worker's."""
    with recovery_settings(**env):
        _forget_clients()
        try:
            yield
        finally:
            _forget_clients()


def _calls_counted(stores: Stores) -> int:
    """Provider calls the limiter counted (successes and failures) over the stores, as the
    Sentinel's current primary holds them."""
    limiter = RateLimiter(get_redis())
    usages = [limiter.usage(str(s), provider=p) for s, (_, p) in stores.items()]
    return sum(u.success_count + u.failure_count for u in usages)


def _archived(engine: Engine, marker: str) -> list[FailedJobArchive]:
    """Archive rows whose stored job mentions ``marker``."""
    with service_session(engine) as session:
        text = cast(FailedJobArchive.job_data, Text)
        rows = list(session.scalars(select(FailedJobArchive).where(text.contains(marker))))
        session.expunge_all()
        return rows


def test_a_sentinel_failover_during_syncs_loses_nothing(
    engine: Engine, emulator: EmulatorHandle, sentinel: OwnSentinel
) -> None:
    stores: Stores = {}
    for n in range(6):
        provider = Provider.GMAIL if n % 2 else Provider.OUTLOOK
        store_id, mailbox = connect_store(engine, emulator, provider)
        for i in range(10):  # three pages of four, two per run: a continuation each
            mailbox.add(f"order {n}-{i}")
        mailbox.faults(slow_ms=150)
        stores[store_id] = (mailbox, provider)
    redis_env = {
        "REDIS_URL": sentinel.url,
        "BROKER_URL": sentinel.url,
        "SYNCGUARD_REDIS_SENTINEL_MASTER": sentinel.master,
    }
    env = {**emulator_env(emulator), **RECOVERY_ENV, **redis_env}
    with safeguards_on(redis_env), group_worker(env, concurrency=2) as worker:
        with driver(env, list(stores)) as jobs:
            assert len(jobs) == len(stores)
            time.sleep(2.0)  # pages running, continuations queued
            old = sentinel.primary_port()
            new = sentinel.failover()  # the old primary is demoted seconds later, meanwhile
        cleared_at = datetime.now(UTC)
        before = _calls_counted(stores)
        # Garbage on the sync queue of the new primary: the Sentinel transport wraps it too.
        marker = f"poison-{uuid.uuid4().hex}"
        get_redis().lpush(f"{get_settings().redis_prefix}{SYNC}", f"not json {marker}")
        for n, (mailbox, _) in enumerate(stores.values()):
            mailbox.add(f"after the failover {n}")
        with driver(env, list(stores)):  # requests through the new primary, and the sweep
            settle(engine, stores, timeout_s=120)
            result = figures("Sentinel failover mid-run", engine, stores, cleared_at)
        sentinel.demoted(old)
        assert get_redis().connection_pool.get_master_address()[1] == new  # type: ignore[attr-defined]
        assert heartbeat()["redis_ping"]  # Beat's heartbeat reaches Redis through the Sentinel
        assert _calls_counted(stores) > before  # the worker's safeguards reached the new primary
        archived = eventually(lambda: _archived(engine, marker), 30)
        assert [a.failure_category for a in archived] == [FailureCategory.VALIDATION]
        assert worker.poll() is None  # and the worker lives on
    assert result.ok, result.violations
