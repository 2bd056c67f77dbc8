"""Servers a fault test owns and breaks: a ``redis-server`` with AOF it can SIGKILL and restart
from its log, a PostgreSQL (Debian's binaries, run as the ``postgres`` user: initdb refuses
root) it can stop and start, and a *driver* process that requests syncs and runs the recovery
sweep against them. The shared servers are never touched.

The driver is a subprocess so that its Celery app publishes to the broker and database the
test hands it (the test process's own app is bound to the shared ones at import).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

#: How long a server may take to come up, seconds.
START_TIMEOUT_S = 30.0
#: The system user PostgreSQL runs as (it refuses root).
PG_USER = "postgres"


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class OwnRedis:
    """A ``redis-server`` on a port of its own with ``appendonly yes, appendfsync always``."""

    directory: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart: the AOF in ``directory`` is replayed) and wait for PING."""
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--dir", str(self.directory), "--appendonly", "yes", "--appendfsync", "always"]
        argv += ["--save", "", "--logfile", str(self.directory / "redis.log")]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        _until(lambda: _pings(client), "redis-server")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final save; only what the AOF fsynced survives."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


@contextmanager
def own_redis() -> Iterator[OwnRedis]:
    """A fresh AOF Redis in a temporary directory, killed and removed at the end."""
    directory = Path(tempfile.mkdtemp(prefix="fault-redis-"))
    server = OwnRedis(directory)
    server.start()
    try:
        yield server
    finally:
        server.kill()
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class OwnPostgres:
    """A PostgreSQL cluster in ``directory`` on a port of its own, trust auth for postgres."""

    directory: Path
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """Start the cluster and wait until it accepts connections."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory}"
        options += " -c fsync=off -c max_connections=200"
        log = self.directory / "postgres.log"
        _pg(
            "pg_ctl",
            "-D",
            str(self.directory / "data"),
            "-w",
            "start",
            "-o",
            options,
            "-l",
            str(log),
        )

    def stop(self) -> None:
        """Stop at once (``-m immediate``: connections cut, like a crash); restart recovers."""
        _pg("pg_ctl", "-D", str(self.directory / "data"), "-m", "immediate", "-w", "stop")


@contextmanager
def own_postgres() -> Iterator[OwnPostgres]:
    """A fresh cluster, migrated to head, stopped and removed at the end."""
    from syncguard.migrate import upgrade

    directory = Path(tempfile.mkdtemp(prefix="fault-pg-"))
    shutil.chown(directory, PG_USER)
    _pg("initdb", "-D", str(directory / "data"), "-A", "trust", "-U", "postgres", "--no-sync")
    server = OwnPostgres(directory)
    server.start()
    try:
        upgrade(server.url)
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _pg(command: str, *args: str) -> None:
    """One of Debian's PostgreSQL programs, as the postgres user."""
    binary = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{command}"))[-1]
    argv = ["runuser", "-u", PG_USER, "--", binary, *args]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {START_TIMEOUT_S}s")


@contextmanager
def driver(env: dict[str, str], store_ids: list[uuid.UUID]) -> Iterator[list[uuid.UUID]]:
    """A subprocess that requests one sync per store and then runs the recovery sweep over
    them every ``SYNCGUARD_SYNC_RECOVERY_SWEEP_S`` until the block ends; yields the job ids."""
    argv = [sys.executable, "-m", "tests.reliability.servers", *map(str, store_ids)]
    proc = subprocess.Popen(
        argv, env={**os.environ, **env}, stdout=subprocess.PIPE, text=True, bufsize=1
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        raise RuntimeError(f"driver exited with {proc.returncode} before requesting")
    try:
        yield [uuid.UUID(j) for j in json.loads(line)]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _drive(store_ids: list[str]) -> None:
    """The driver's body (see ``driver``)."""
    from syncguard.settings import get_settings
    from tasks.recovery import recover_sync_jobs
    from tasks.sync.requests import request_sync

    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    jobs = [request_sync(uuid.UUID(s)) for s in store_ids]
    print(json.dumps([str(j) for j in jobs if j is not None]), flush=True)
    period = get_settings().sync_recovery_sweep_s
    while not stop:
        time.sleep(period)
        try:
            recover_sync_jobs(store_ids)
        except Exception as exc:  # the database or broker is down: Beat's next tick retries
            print(f"sweep failed: {type(exc).__name__}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    _drive(sys.argv[1:])
