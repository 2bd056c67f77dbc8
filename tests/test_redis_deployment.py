"""How REDIS_URL / BROKER_URL name a Sentinel or Cluster deployment: the settings refuse what
cannot work, ``connect`` builds the client the URL names, and Celery gets the matching
transport (the real servers: tests/reliability/test_redis_cluster.py and
test_redis_sentinel.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from pydantic import ValidationError
from redis.sentinel import SentinelConnectionPool

from safeguards.redis_state import connect
from syncguard.settings import Settings, get_settings

SENTINELS = "sentinel://:s3cret@127.0.0.1:26379/2;sentinel://127.0.0.1:26380"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """The environment, for settings read afresh (the process's cached ones are restored)."""
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_a_sentinel_url_needs_the_master_name_and_errors_hide_the_password(
    env: pytest.MonkeyPatch,
) -> None:
    env.setenv("REDIS_URL", SENTINELS)
    with pytest.raises(ValidationError, match="SYNCGUARD_REDIS_SENTINEL_MASTER") as raised:
        Settings()
    assert "s3cret" not in str(raised.value)


def test_a_cluster_is_never_the_broker(env: pytest.MonkeyPatch) -> None:
    env.setenv("SYNCGUARD_REDIS_CLUSTER", "1")
    env.setenv("REDIS_URL", "redis://127.0.0.1:7000")
    env.delenv("BROKER_URL", raising=False)
    with pytest.raises(ValidationError, match="BROKER_URL"):
        Settings()
    env.setenv("BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
    assert Settings().redis_cluster


def test_a_brace_in_the_key_prefix_is_refused(env: pytest.MonkeyPatch) -> None:
    # It would become every key's hash tag: one Cluster slot for everything.
    env.setenv("SYNCGUARD_REDIS_PREFIX", "app{1}:")
    with pytest.raises(ValidationError, match="redis_prefix"):
        Settings()


def test_connect_finds_the_primary_through_every_sentinel_named(env: pytest.MonkeyPatch) -> None:
    env.setenv("SYNCGUARD_REDIS_SENTINEL_MASTER", "orders")
    client = connect(SENTINELS, timeout_s=1.5)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "orders"
    assert pool.connection_kwargs["db"] == 2
    assert pool.connection_kwargs["password"] == "s3cret"
    assert pool.connection_kwargs["socket_timeout"] == 1.5
    sentinels = pool.sentinel_manager.sentinels
    ports = sorted(s.connection_pool.connection_kwargs["port"] for s in sentinels)
    assert ports == [26379, 26380]


def _celery_config(extra: dict[str, str]) -> dict[str, object]:
    """celeryconfig's Redis settings as a fresh process computes them from ``extra``."""
    code = (
        "import json, celeryconfig as c; print(json.dumps({k: getattr(c, k, None) for k in "
        "('broker_transport', 'broker_transport_options', 'result_backend', "
        "'result_backend_transport_options')}))"
    )
    env = {**os.environ, **extra}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    loaded: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_celery_uses_the_sentinel_transport_with_the_master_name() -> None:
    config = _celery_config(
        {"REDIS_URL": SENTINELS, "BROKER_URL": SENTINELS, "SYNCGUARD_REDIS_SENTINEL_MASTER": "m"}
    )
    assert config["broker_transport"] == "tasks.redis_transport:SentinelTransport"
    for options in ("broker_transport_options", "result_backend_transport_options"):
        assert config[options]["master_name"] == "m"  # type: ignore[index]
    assert config["result_backend"] == SENTINELS


def test_with_the_safeguards_on_a_cluster_results_follow_the_broker() -> None:
    cluster = {"SYNCGUARD_REDIS_CLUSTER": "1", "REDIS_URL": "redis://127.0.0.1:7000"}
    amqp = "amqp://guest:guest@127.0.0.1:5672//"
    assert _celery_config({**cluster, "BROKER_URL": amqp})["result_backend"] == "rpc://"
    broker = "redis://127.0.0.1:6390/0"
    assert _celery_config({**cluster, "BROKER_URL": broker})["result_backend"] == broker
