"""The guard spends the provider app's quota with the store's: real Redis and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from models import CircuitState, Provider
from providers.oauth import OAuthCredentials
from safeguards.circuit_breaker.breaker import circuit_stats
from safeguards.errors import RateLimited
from safeguards.rate_limit.app_limits import AppId
from safeguards.rate_limit.app_quota import get_app_quota_pool
from safeguards.rate_limit.limiter import get_rate_limiter
from syncguard.crypto import encrypt_json
from syncguard.db import service_session
from syncguard.settings import get_settings
from tasks.guard import CallScope, guarded_call
from tests.factories import make_business, make_store


def connected_store(engine: Engine, provider: Provider, client_id: str, tenant: str | None) -> str:
    """A store whose credentials name ``client_id`` (and ``tenant``): its provider app."""
    with service_session(engine) as session:
        store = make_store(session, make_business(session), provider)
        creds = OAuthCredentials(client_id, "secret", "refresh", tenant_id=tenant)
        store.credentials_encrypted = encrypt_json(creds.to_dict())
        return str(store.id)


@pytest.fixture
def graph_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[AppId]:
    """A Graph app in one tenant allowed 3 requests per 10 s, leased 2 at a time."""
    app = AppId(Provider.OUTLOOK, f"app-{uuid.uuid4().hex[:8]}", "tenant-a")
    monkeypatch.setenv("SYNCGUARD_APP_QUOTA_LIMITS", json.dumps({app.name: 3}))
    monkeypatch.setenv("SYNCGUARD_APP_QUOTA_BLOCKS", json.dumps({"outlook": 2}))
    get_settings.cache_clear()
    yield app
    monkeypatch.undo()
    get_settings.cache_clear()


def _call(store_id: str) -> None:
    with guarded_call(CallScope(uuid.UUID(store_id), Provider.OUTLOOK, "outlook"), "delta"):
        pass


def test_stores_of_one_app_share_its_quota_and_exhaustion_defers(
    engine: Engine, graph_app: AppId
) -> None:
    # Given two mailboxes of one Graph app in one tenant, and a third in another tenant
    one, two = (
        connected_store(engine, Provider.OUTLOOK, graph_app.client_id, "tenant-a") for _ in "12"
    )
    elsewhere = connected_store(engine, Provider.OUTLOOK, graph_app.client_id, "tenant-b")
    # When they make four calls between them
    _call(one)
    _call(two)
    _call(one)
    with pytest.raises(RateLimited) as refused:
        _call(two)
    # Then the fourth is refused like a store limit (a deferral with a retry-after) ...
    assert "app_quota" in str(refused.value) and refused.value.retry_after_s > 0
    # ... and the refusal touched neither the store's circuit nor its quota
    stats = circuit_stats(uuid.UUID(two), "outlook")
    assert stats.state is CircuitState.CLOSED and stats.total_failures == 0
    windows = get_rate_limiter().usage(two, provider=Provider.OUTLOOK).windows
    assert [w.used for w in windows] == [1, 1, 1]
    # ... while the same app in another tenant has its own quota
    _call(elsewhere)
    assert get_app_quota_pool().usage(graph_app).used == 3


def test_a_call_the_store_refuses_gives_the_app_units_back(
    engine: Engine, graph_app: AppId
) -> None:
    store = connected_store(engine, Provider.OUTLOOK, graph_app.client_id, "tenant-a")
    pool = get_app_quota_pool()
    _call(store)
    assert pool.held(graph_app) == 1  # a block of 2, one spent
    get_rate_limiter().throttle(store, 30.0, provider=Provider.OUTLOOK)
    with pytest.raises(RateLimited) as refused:
        _call(store)
    # The store's throttle refused the call: its app unit is back in this process's block
    assert "throttled" in str(refused.value)
    assert pool.held(graph_app) == 1
    assert pool.usage(graph_app).used == 2


def test_a_gmail_project_is_its_oauth_client(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = f"{uuid.uuid4().hex[:10]}.apps.googleusercontent.com"
    monkeypatch.setenv("SYNCGUARD_APP_QUOTA_LIMITS", json.dumps({f"gmail:{client}": 45}))
    get_settings.cache_clear()
    try:
        store = connected_store(engine, Provider.GMAIL, client, None)
        scope = CallScope(uuid.UUID(store), Provider.GMAIL, "gmail")
        for _ in range(2):  # messages.get costs 20 units: two fit in 45, a third does not
            with guarded_call(scope, "messages.get"):
                pass
        with pytest.raises(RateLimited), guarded_call(scope, "messages.get"):
            pass
        with guarded_call(scope, "history.list"):  # 2 units still fit
            pass
        usage = get_app_quota_pool().usage(AppId(Provider.GMAIL, client))
        assert (usage.limit, usage.used) == (45, 45)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_store_connect_names_the_graph_tenant(engine: Engine) -> None:
    from tasks.provider_apps import store_app
    from tests.test_cli_ops import _ok

    with service_session(engine) as session:
        store_id = make_store(session, make_business(session), Provider.OUTLOOK).id
    grant = "graph-client\nsecret\nrefresh\n"
    _ok("store", "connect", str(store_id), "--tenant-id", " tenant-c ", input=grant)
    assert store_app(store_id) == AppId(Provider.OUTLOOK, "graph-client", "tenant-c")


DB_DOWN_PROBE = """
import sys, uuid
from models import Provider
from safeguards.errors import RateLimited
from tasks.guard import CallScope, guarded_call

scope = CallScope(uuid.UUID(sys.argv[1]), Provider.OUTLOOK, "outlook")
try:
    with guarded_call(scope, "delta"):
        print("CALLED")
except RateLimited as refused:
    print(f"REFUSED {refused.retry_after_s}")
"""


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_an_unreadable_store_app_applies_the_fail_mode(engine: Engine, mode: str) -> None:
    # Given a store whose app cannot be read: PostgreSQL unreachable from the calling process
    store = connected_store(engine, Provider.OUTLOOK, "app-db-down", "tenant-x")
    env = {
        **os.environ,
        "DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
        "SYNCGUARD_SAFEGUARD_FAIL_MODE": mode,
        "SYNCGUARD_FAIL_CLOSED_RETRY_S": "7",
    }
    run = subprocess.run(
        [sys.executable, "-c", DB_DOWN_PROBE, store],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Then the fail mode decides, as for an unreachable Redis, with a log line saying so:
    # closed defers the call; open goes on to the store's admission (whose own limit
    # overrides need PostgreSQL too, so that step fails on its own)
    assert f"app quota unavailable, failing {mode}" in run.stderr
    if mode == "closed":
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == "REFUSED 7.0"
    else:
        assert run.stdout.strip() == "CALLED" or "in _admit" in run.stderr  # past the app
