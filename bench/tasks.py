"""Tasks/s on real workers (``-P prefork -c 2``, Redis broker), each against its peer.

- guarded no-op (one ``self.guard()``) against a plain no-op, both on our configuration;
- a plain no-op on our configuration against the same on a stock ``Celery()`` app.
A round publishes N tasks and waits for every result: tasks/s = N / elapsed. The workers run
for the whole benchmark, in a throwaway database (migrated) and under their own Redis prefix.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import Celery
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.harness import Benchmark, Pair
from syncguard.services import ensure_services
from syncguard.settings import get_settings

READY_TIMEOUT_S = 90.0


class _Stack:
    """A throwaway database with one store, our worker and a stock worker, until closed."""

    def __init__(self) -> None:
        services = ensure_services(get_settings())
        self.redis_url = services.redis_url
        tag = uuid.uuid4().hex[:8]
        self.prefix = f"bench-{tag}:"
        self.stock_prefix = f"bench-stock-{tag}:"
        self.admin_url = make_url(services.database_url)
        self.db_name = f"syncguard_bench_{tag}"
        self._create_database()
        self.store_id = self._make_store()
        env = {
            **os.environ,
            "DATABASE_URL": self.db_url,
            "REDIS_URL": self.redis_url,
            "SYNCGUARD_REDIS_PREFIX": self.prefix,
            "BENCH_STOCK_PREFIX": self.stock_prefix,
        }
        self.procs = [
            _start(["-A", "tasks", "worker", "-Q", "sync", "-I", "bench.task_defs"], env),
            _start(["-A", "bench.stock_app", "worker"], env),
        ]
        self.ours = _client(self.redis_url, self.prefix, "sync")
        self.stock = _client(self.redis_url, self.stock_prefix, "celery")

    @property
    def db_url(self) -> str:
        return self.admin_url.set(database=self.db_name).render_as_string(hide_password=False)

    def _create_database(self) -> None:
        from syncguard.migrate import upgrade

        admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.db_name}"'))
        admin.dispose()
        upgrade(self.db_url)

    def _make_store(self) -> str:
        engine = create_engine(self.db_url)
        big = 10**9
        with engine.begin() as conn:
            business = conn.execute(
                text("INSERT INTO businesses (name, slug) VALUES ('Bench', :s) RETURNING id"),
                {"s": f"bench-{uuid.uuid4().hex[:8]}"},
            ).scalar_one()
            store = conn.execute(
                text(
                    "INSERT INTO stores (business_id, provider, mailbox_address) "
                    "VALUES (:b, 'gmail', 'bench@example.com') RETURNING id"
                ),
                {"b": business},
            ).scalar_one()
            conn.execute(
                text(
                    "INSERT INTO provider_rate_limits (store_id, provider, operation_type, "
                    "requests_per_minute, requests_per_hour, requests_per_day) "
                    "VALUES (:s, 'gmail', '*', :big, :big, :big)"
                ),
                {"s": store, "big": big},
            )
        engine.dispose()
        return str(store)

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)'))
        admin.dispose()


def _client(redis_url: str, prefix: str, queue: str) -> Celery:
    app = Celery("bench-client", broker=redis_url, backend=redis_url)
    app.conf.broker_transport_options = {"global_keyprefix": prefix}
    app.conf.result_backend_transport_options = {"global_keyprefix": prefix}
    app.conf.task_default_queue = queue
    app.conf.task_serializer = "json"
    return app


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = Path(tempfile.mkstemp(prefix="bench-worker-", suffix=".log")[1])
    argv = [sys.executable, "-m", "celery", *args, "-P", "prefork", "-c", "2", "-l", "info"]
    argv += ["-n", f"bench-{uuid.uuid4().hex[:6]}@%h", "--without-mingle", "--without-gossip"]
    with log.open("w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while " ready." not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"bench worker did not start: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    return proc


def _rate(app: Celery, name: str, args: list[Any], n: int) -> float:
    started = time.perf_counter()
    results = [app.send_task(name, args=args) for _ in range(n)]
    for result in results:
        result.get(timeout=120)
    return n / (time.perf_counter() - started)


_STACK: list[_Stack] = []


def _stack() -> _Stack:
    if not _STACK:
        _STACK.append(_Stack())
        # A later benchmark's setup may raise before the module's last one attaches _close:
        # the workers must still stop when the run ends (a stray pair was found left running).
        atexit.register(_close)
    return _STACK[0]


def _close() -> None:
    while _STACK:
        _STACK.pop().close()


def _pair(ours: Callable[[_Stack, int], float], peer: Callable[[_Stack, int], float]) -> Any:
    def setup(quick: bool) -> Pair:
        stack, n = _stack(), (100 if quick else 400)
        ours(stack, 20)  # warm up: children forked, scripts loaded, store cached
        peer(stack, 20)
        return Pair(ours=lambda: ours(stack, n), peer=lambda: peer(stack, n))

    return setup


def _guarded(stack: _Stack, n: int) -> float:
    return _rate(stack.ours, "bench.guarded", [stack.store_id], n)


def _plain(stack: _Stack, n: int) -> float:
    return _rate(stack.ours, "bench.plain", [], n)


def _stock(stack: _Stack, n: int) -> float:
    return _rate(stack.stock, "bench.plain", [], n)


def _last_setup(quick: bool) -> Pair:
    pair: Pair = _pair(_plain, _stock)(quick)
    pair.close = _close  # the last benchmark of the module stops the workers
    return pair


#: Issue 12 goals 1 and 2.
BENCHMARKS = [
    Benchmark(
        name="guarded no-op task",
        unit="tasks/s",
        peer_name="plain task, our config",
        goal=0.85,
        setup=_pair(_guarded, _plain),
    ),
    Benchmark(
        name="plain task, our config",
        unit="tasks/s",
        peer_name="plain task, stock Celery",
        goal=0.7,
        setup=_last_setup,
    ),
]
