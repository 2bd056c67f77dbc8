"""A spent provider-app quota defers jobs on real workers, and no window holds more than it."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import Engine

from models import CircuitState, Provider
from safeguards import ArchiveFilter, list_entries
from safeguards.circuit_breaker.breaker import circuit_stats
from safeguards.rate_limit.app_limits import AppId
from safeguards.rate_limit.app_quota import get_app_quota_pool
from tests import app_quota_workload, workload
from tests.tasks.test_app_quota_guard import connected_store
from tests.worker import running_worker

#: The Graph app's quota in the worker: 4 requests per 10 s (Graph's window), leased 2 at once.
LIMIT = 4
WINDOW_S = 10.0


def test_an_exhausted_app_defers_jobs_on_four_worker_processes(engine: Engine) -> None:
    # Given four mailboxes of one Graph app (one tenant) and eight jobs, one call each
    client = f"app-{uuid.uuid4().hex[:8]}"
    stores = [connected_store(engine, Provider.OUTLOOK, client, "tenant-w") for _ in range(4)]
    env = {
        "SYNCGUARD_APP_QUOTA_LIMITS": json.dumps({f"outlook:{client}@tenant-w": LIMIT}),
        "SYNCGUARD_APP_QUOTA_BLOCKS": json.dumps({"outlook": 2}),
        "SYNCGUARD_MAX_BACKOFF_S": "3",
        "SYNCGUARD_DEFER_HORIZON_S": "120",
    }
    marker = uuid.uuid4().hex
    with running_worker(include=("tests.app_quota_workload",), concurrency=4, env=env):
        results = [
            app_quota_workload.graph_call.delay(stores[i % 4], marker) for i in range(2 * LIMIT)
        ]
        reports = [r.get(timeout=120) for r in results]
    # Then every job ran once, without spending a retry; those past the quota were deferred
    assert all(r["retries"] == 0 for r in reports)
    assert sum(1 for r in reports if r["deferrals"] > 0) >= LIMIT
    times = app_quota_workload.call_times(marker)
    assert len(times) == 2 * LIMIT
    # ... no window of Graph's 10 s held more calls than the app's quota
    assert max(sum(1 for t in times if end - WINDOW_S < t <= end) for end in times) <= LIMIT
    # ... and the app's refusals were never the circuit's business, nor archived
    for store in stores:
        stats = circuit_stats(uuid.UUID(store), "outlook")
        assert stats.state is CircuitState.CLOSED and stats.total_failures == 0
        assert list_entries(ArchiveFilter(store_id=uuid.UUID(store))) == []


def test_a_stopping_worker_process_gives_its_leased_units_back(engine: Engine) -> None:
    # Given a Gmail project leased in blocks of 100 units and one messages.get (20 units)
    client = f"{uuid.uuid4().hex[:10]}.apps.googleusercontent.com"
    store = connected_store(engine, Provider.GMAIL, client, None)
    env = {"SYNCGUARD_APP_QUOTA_BLOCKS": json.dumps({f"gmail:{client}": 100})}
    with running_worker(include=("tests.workload",), concurrency=1, env=env):
        workload.slow_call.delay(store, uuid.uuid4().hex, 0).get(timeout=60)
        app = AppId(Provider.GMAIL, client)
        assert get_app_quota_pool().usage(app).used == 100  # the worker holds 80 of them
    # When the worker stops, its process gives the 80 back (well within Gmail's minute)
    usage = get_app_quota_pool().usage(app)
    assert (usage.used, usage.returned_total) == (20, 80)
