"""Test servers: the URLs from the environment, else the embedded ones; a fresh database per run."""

from __future__ import annotations

import os
import uuid
from collections.abc import Generator, Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.orm import Session

#: This process's own database and Redis key prefix, so two runs on one machine never collide.
#: Under pytest-xdist each worker process (PYTEST_XDIST_WORKER = gw0, gw1, ...) is a run of its
#: own: its database, its Redis keys and so its broker queues (celeryconfig's global_keyprefix),
#: so the Celery workers one xdist worker starts never take another's messages.
_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
RUN_ID = uuid.uuid4().hex[:10] + (f"_{_XDIST_WORKER}" if _XDIST_WORKER else "")
TEST_DATABASE = f"syncguard_test_{RUN_ID}"
TEST_REDIS_PREFIX = f"syncguard-test-{RUN_ID}:"
#: Modules that each take a minute or more (--durations of a whole run). Under pytest-xdist
#: (--dist loadfile hands out whole modules in collection order) they go first, so no worker
#: picks one up while the others are nearly done; alone, the suite keeps its usual order.
SLOW_MODULES = (
    "tests/test_newcomer.py",
    "tests/reliability/test_recovery_kill.py",
    "tests/reliability/test_chaos.py",
    "tests/reliability/test_database_faults.py",
    "tests/reliability/test_safeguard_redis.py",
    "tests/api/test_secrets_in_logs.py",
    "tests/test_embedded.py",
)
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


def _is_xdist_controller(config: pytest.Config) -> bool:
    """True in the process that only hands tests to xdist workers (it runs none itself)."""
    workers = getattr(config.option, "numprocesses", None)
    return not _XDIST_WORKER and bool(workers) and config.getoption("dist", "no") != "no"


def pytest_configure(config: pytest.Config) -> None:
    """Create and migrate this run's database before any test module imports the app."""
    server_db_url, redis_url = _server_urls(config)
    if _is_xdist_controller(config):
        # The controller started the embedded servers if needed (before its workers exist, so
        # they never race to start them) and stops them at the end; each worker migrates its
        # own database.
        return
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
        _stop_what_this_session_started(config)
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, the SLOW_MODULES first (a stable sort: each module keeps its own order)."""
    if not _XDIST_WORKER:
        return

    def rank(item: pytest.Item) -> int:
        module = item.nodeid.split("::", 1)[0]
        return SLOW_MODULES.index(module) if module in SLOW_MODULES else len(SLOW_MODULES)

    items.sort(key=rank)


@pytest.hookimpl(wrapper=True)
def pytest_report_to_serializable(
    config: pytest.Config, report: pytest.CollectReport | pytest.TestReport
) -> Generator[None, dict[str, Any] | None, dict[str, Any] | None]:
    """An xdist worker's report with every string made UTF-8 encodable.

    Tests of hostile input (lone surrogates in provider answers) capture them in their logs;
    execnet refuses to send such a string and the whole run stops with an internal error.
    """
    data = yield
    return _utf8_safe(data) if data is not None else None


def _utf8_safe(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {key: _utf8_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_utf8_safe(item) for item in value)
    return value


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
