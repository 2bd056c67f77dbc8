"""Test servers: the URLs from the environment, else the embedded ones; a fresh database per run."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.orm import Session

#: This run's own database and Redis key prefix, so two runs on one machine never collide.
RUN_ID = uuid.uuid4().hex[:10]
TEST_DATABASE = f"syncguard_test_{RUN_ID}"
TEST_REDIS_PREFIX = f"syncguard-test-{RUN_ID}:"
_SERVER_KEY = pytest.StashKey[str]()
#: The embedded servers this session started (none when the URLs are set): stopped at the end.
_STARTED_KEY = pytest.StashKey[frozenset[str]]()


def _server_urls(config: pytest.Config) -> tuple[str, str]:
    from syncguard.services import ensure_services
    from syncguard.settings import Settings

    urls = ensure_services(Settings(), start=True)
    config.stash[_STARTED_KEY] = urls.started
    return urls.database_url, urls.redis_url


def _admin_engine(server_url: str) -> Engine:
    return create_engine(server_url, isolation_level="AUTOCOMMIT")


def pytest_configure(config: pytest.Config) -> None:
    """Create and migrate this run's database before any test module imports the app."""
    server_db_url, redis_url = _server_urls(config)
    test_url = make_url(server_db_url).set(database=TEST_DATABASE)
    with _admin_engine(server_db_url).connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{TEST_DATABASE}"'))
    rendered = test_url.render_as_string(hide_password=False)
    # The run's broker is always its Redis (under the run's prefix), whatever the shell holds:
    # the Redis broker's own tests (poison entries on its lists) then always have it, and the
    # RabbitMQ, Sentinel and fault tests hand their workers a broker of their own.
    os.environ.update(
        DATABASE_URL=rendered,
        REDIS_URL=redis_url,
        BROKER_URL=redis_url,
        SYNCGUARD_REDIS_PREFIX=TEST_REDIS_PREFIX,
        SYNCGUARD_ENVIRONMENT="test",
    )
    config.stash[_SERVER_KEY] = server_db_url

    from syncguard.migrate import upgrade

    upgrade(rendered)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Drop this run's database, delete its Redis keys, stop the embedded servers it started."""
    server_db_url = config.stash.get(_SERVER_KEY, None)
    if server_db_url is None:
        return
    from syncguard.db import dispose_engines

    dispose_engines()
    with _admin_engine(server_db_url).connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{TEST_DATABASE}" WITH (FORCE)'))
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    for key in client.scan_iter(match=f"{TEST_REDIS_PREFIX}*", count=1000):
        client.delete(key)
    client.close()
    _stop_what_this_session_started(config)


def _stop_what_this_session_started(config: pytest.Config) -> None:
    # Servers that were already running (a `syncguard up` beside the tests) stay up.
    started = config.stash.get(_STARTED_KEY, frozenset())
    if started:
        from syncguard.services import stop_embedded
        from syncguard.settings import Settings

        stop_embedded(Settings(), started)


@pytest.fixture(scope="session")
def database_url() -> str:
    """SQLAlchemy URL of this run's freshly migrated database."""
    return os.environ["DATABASE_URL"]


@pytest.fixture(scope="session")
def server_url(pytestconfig: pytest.Config) -> str:
    """URL of the PostgreSQL server itself (its default database), for cluster-level work."""
    return pytestconfig.stash[_SERVER_KEY]


@pytest.fixture(scope="session")
def engine(database_url: str) -> Engine:
    """The service-role engine the application itself uses."""
    from syncguard.db import get_engine

    return get_engine(database_url)


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A service-role session committed at the end of the test (tests see each other's rows)."""
    from syncguard.db import service_session

    with service_session(engine) as s:
        yield s


@pytest.fixture(scope="session")
def redis_client() -> redis.Redis:
    """A client of this run's Redis."""
    return redis.Redis.from_url(os.environ["REDIS_URL"])
