"""The safeguards on a real Redis Cluster of three primaries the test starts on loopback ports
(issue 13 point 3): every script and transaction stays in one slot, the state of different
stores spreads over the nodes, the Beat mirrors read it back, and a real worker's syncs with its
safeguards on the Cluster lose nothing (the audit passes). The broker stays the shared Redis:
Celery has no Cluster transport (``SYNCGUARD_REDIS_CLUSTER`` requires BROKER_URL).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
import redis
from redis.cluster import RedisCluster
from sqlalchemy import Engine, func, select

from models import CircuitBreakerState, Provider, ProviderRateLimit
from models.enums import CircuitState
from providers.emulator.runner import EmulatorHandle, running_emulator
from safeguards.admission import admit, settle
from safeguards.alerts.rules import AlertThresholds
from safeguards.alerts.store import denial_alerts
from safeguards.circuit_breaker.breaker import CircuitBreaker, flush_stats_to_postgres
from safeguards.health_metrics import prometheus
from safeguards.rate_limit import limiter as limiter_module
from safeguards.rate_limit.app_limits import AppId, AppQuota
from safeguards.rate_limit.app_quota import AppQuotaPool
from safeguards.rate_limit.limiter import RateLimiter, flush_usage_to_postgres
from safeguards.redis_state import get_redis, primaries
from safeguards.single_flight import SingleFlight
from syncguard.db import service_session
from syncguard.settings import get_settings
from tasks.beat import claim_run
from tests.factories import make_business, make_store
from tests.providers import Mailbox
from tests.reliability.fault_support import figures
from tests.reliability.fault_support import settle as settle_stores
from tests.reliability.recovery_support import RECOVERY_ENV, group_worker, recovery_settings
from tests.reliability.redis_servers import OwnCluster, own_cluster
from tests.reliability.servers import driver
from tests.sync_support import connect_store, emulator_env
from tests.worker import purge_queues

CLUSTER_ENV = {"SYNCGUARD_REDIS_CLUSTER": "1"}
#: A provider app's quota: blocks of 10 units leased per lease.
APP_QUOTA = AppQuota(limit=1000, window_ms=60_000, block=10, validity_ms=1_000, bucket_ms=100)


@pytest.fixture(scope="module")
def cluster() -> Iterator[OwnCluster]:
    with own_cluster() as server:
        yield server


def _forget_clients() -> None:
    # Every process-wide client of the safeguards' Redis, made again from the settings.
    get_redis.cache_clear()
    limiter_module._DEFAULT.clear()
    prometheus._default_client.cache_clear()


@contextmanager
def safeguards_on(cluster: OwnCluster) -> Iterator[redis.Redis]:
    """This process's safeguards on the Cluster; yields their client (a RedisCluster)."""
    with recovery_settings(REDIS_URL=cluster.url, **CLUSTER_ENV):
        _forget_clients()
        try:
            client = get_redis()
            made: object = client  # typed redis.Redis by design (see redis_state.connect)
            assert isinstance(made, RedisCluster)
            yield client
        finally:
            _forget_clients()


def _nodes_holding(client: redis.Redis, kind: str, scopes: Iterable[uuid.UUID]) -> int:
    """How many primaries hold keys of ``kind`` of these scopes (stores), each SCANned."""
    prefix = get_settings().redis_prefix
    patterns = [f"{prefix}{kind}:{{{scope}}}*" for scope in scopes]
    nodes = primaries(client)
    assert len(nodes) == 3
    return sum(
        1 for _, node in nodes if any(next(node.scan_iter(p, count=1000), None) for p in patterns)
    )


def _stores(engine: Engine, n: int) -> list[uuid.UUID]:
    with service_session(engine) as session:
        business = make_business(session)
        return [make_store(session, business).id for _ in range(n)]


def test_every_safeguard_decides_on_a_cluster(engine: Engine, cluster: OwnCluster) -> None:
    stores = _stores(engine, 8)
    with safeguards_on(cluster) as client:
        for sid in stores:  # circuit and limiter in one script: the store's slot
            admitted = admit(sid, "gmail_api", Provider.GMAIL, "messages.list")
            assert admitted.rate is not None and admitted.rate.allowed
            lease = admitted.rate.lease_id
            settle(
                sid,
                "gmail_api",
                Provider.GMAIL,
                lease_id=lease,
                succeeded=True,
                counted=True,
                trial_token=admitted.circuit.trial_token,
            )
        limiter = RateLimiter(client)
        limiter.throttle(str(stores[0]), 30.0, provider=Provider.GMAIL)
        assert limiter.usage(str(stores[0]), provider=Provider.GMAIL).throttled_until
        assert limiter.usage(str(stores[1]), provider=Provider.GMAIL).success_count == 1
        assert _nodes_holding(client, "ratelimit", stores) >= 2  # spread over the nodes

        breaker = CircuitBreaker(client, write_through=False)
        for _ in range(10):
            breaker.record(stores[2], "gmail_api", False, failure_reason="503")
        assert breaker.stats(stores[2], "gmail_api").state is CircuitState.OPEN
        assert not breaker.allow(stores[2], "gmail_api").allowed

        flight = SingleFlight("cluster-test")
        scope = str(stores[3])
        assert flight.request(scope, "job-1") and flight.acquire(scope, "job-1")
        assert not flight.request(scope, "job-2")  # folded into the running job-1
        assert flight.release(scope, "job-1", "job-3")  # so a follow-up is due
        assert flight.holder(scope) == "job-3"

        now = time.time()
        assert claim_run(client, f"cluster-{uuid.uuid4().hex}", 60.0, now) is not None

        business = uuid.uuid4()
        firing, _held = denial_alerts(
            [(business, stores[4], 3)], AlertThresholds.from_settings(), client=client
        )
        assert firing == []  # a first sample only sets the baseline (a MULTI in one slot)

        task = f"cluster-{uuid.uuid4().hex[:6]}"
        prometheus.count_task(task, "success", 0.02)  # one MULTI/EXEC in the counters' slot
        scraped = list(prometheus.RedisCounterCollector({}).collect())
        totals = next(m for m in scraped if m.name == "syncguard_tasks")
        assert any(s.labels.get("task") == task and s.value == 1 for s in totals.samples)


def test_beat_mirrors_read_the_cluster(engine: Engine, cluster: OwnCluster) -> None:
    stores = _stores(engine, 8)
    with safeguards_on(cluster) as client:
        for sid in stores:
            admitted = admit(sid, "gmail_api", Provider.GMAIL, "messages.list")
            assert admitted.rate is not None and admitted.rate.allowed
        # One pipeline per node; stores of the test before may be in the touched set too.
        assert flush_usage_to_postgres() >= len(stores)
        quiet = CircuitBreaker(client, write_through=False)  # only the mirror writes rows
        for sid in stores[:3]:
            for _ in range(10):
                quiet.record(sid, "gmail_api", False, failure_reason="503")
        flush_stats_to_postgres()  # circuits on every node
        # Beat's reconciliation requests many stores' single flights in one batch.
        flight = SingleFlight(f"cluster-{uuid.uuid4().hex[:6]}")
        requested = flight.run_many("request", [(str(s), f"job-{s}", "") for s in stores])
        assert requested == [1] * len(stores)
        assert [flight.holder(str(s)) for s in stores] == [f"job-{s}" for s in stores]
        # The dashboard and /metrics read every provider app's usage in one batch.
        apps = [AppId(Provider.GMAIL, f"client-{uuid.uuid4().hex[:8]}") for _ in range(6)]
        pool = AppQuotaPool(client, quota_of=lambda _app: APP_QUOTA)
        assert all(pool.take(app, 3).allowed for app in apps)
        used = {u.app: u.used for u in pool.usages()}
        assert [used[app.name] for app in apps] == [APP_QUOTA.block] * len(apps)
    with service_session(engine) as session:
        opened = session.scalar(
            select(func.count())
            .select_from(CircuitBreakerState)
            .where(
                CircuitBreakerState.store_id.in_(stores[:3]),
                CircuitBreakerState.state == CircuitState.OPEN,
            )
        )
        assert opened == 3
        rows = session.scalar(
            select(func.count())
            .select_from(ProviderRateLimit)
            .where(ProviderRateLimit.store_id.in_(stores), ProviderRateLimit.operation_type == "*")
        )
    assert rows == len(stores)


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


def test_a_workers_syncs_with_its_safeguards_on_a_cluster_lose_nothing(
    engine: Engine, emulator: EmulatorHandle, cluster: OwnCluster
) -> None:
    stores: dict[uuid.UUID, tuple[Mailbox, Provider]] = {}
    for n in range(6):
        provider = Provider.GMAIL if n % 2 else Provider.OUTLOOK
        store_id, mailbox = connect_store(engine, emulator, provider)
        for i in range(10):  # three pages of four, two per run: a continuation each
            mailbox.add(f"order {n}-{i}")
        stores[store_id] = (mailbox, provider)
    env = {**emulator_env(emulator), **RECOVERY_ENV, **CLUSTER_ENV, "REDIS_URL": cluster.url}
    purge_queues()
    started = datetime.now(UTC)
    with safeguards_on(cluster) as client, group_worker(env, concurrency=2):
        with driver(env, list(stores)):
            settle_stores(engine, stores, timeout_s=120)
            result = figures("safeguards on a 3-primary Redis Cluster", engine, stores, started)
        assert _nodes_holding(client, "ratelimit", stores) >= 2  # the worker's decisions
    assert result.ok, result.violations
