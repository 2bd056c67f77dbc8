"""Idle worker memory: ``celery -A tasks worker -P prefork -c 2`` against a stock Celery worker.

Both run on the same broker (each on a queue of its own), at ``-l info`` so their "ready" line
says when start-up is over; then, after ``SETTLE_S`` idle, the resident set (RSS, psutil) of
the worker and its two pool children is summed (lower is better, goal 8 of issue 12). Both
workers start once; each round samples them again. The notes add the per-child RSS and the
unique set (USS: what a child does not share with its parent).
``python -m bench.worker_memory`` prints one measurement of each.

What bounds the ratio (RSS added by each import, one process, after a stock worker's own imports
on the same Redis broker; psutil, 2026-12-01): SQLAlchemy 19.0 MB (core 11.0, ORM 5.6, the
PostgreSQL dialect 2.4), psycopg 8.6, pydantic with pydantic-settings 8.6, syncguard's modules
~11 (prometheus_client with our metrics server 3.8, models 1.8, settings 1.5). A stock worker is
~57 MB a process, so 1.3x leaves ~17 MB a process: SQLAlchemy and psycopg alone, in all three
processes, put the floor near 1.48x. Adapters and httpx load on a task's first provider call
(``tests/test_worker_imports.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass

import psutil  # type: ignore[import-untyped]

from bench.harness import Benchmark, Pair
from syncguard.services import ensure_services
from syncguard.settings import get_settings

#: Idle time after "ready" before measuring, seconds (lazy imports and pools settle).
SETTLE_S = 2.0
READY_TIMEOUT_S = 90
#: The stock peer: a Celery app with one task and nothing else.
STOCK_APP = "bench.stock_worker"


@dataclass(frozen=True)
class Footprint:
    """RSS of the worker and its children, MB; per child RSS and USS, MB."""

    total_mb: float
    child_rss_mb: float
    child_uss_mb: float


class IdleWorker:
    """``celery -A app worker -P prefork -c 2`` on a queue of its own, started and left idle."""

    def __init__(self, app: str) -> None:
        urls = ensure_services(get_settings())
        tag = uuid.uuid4().hex[:10]
        env = {
            **os.environ,
            "REDIS_URL": urls.redis_url,
            "BROKER_URL": urls.broker_url,
            "SYNCGUARD_REDIS_PREFIX": f"benchmem{tag}:",
        }
        argv = [sys.executable, "-m", "celery", "-A", app, "worker", "-P", "prefork", "-c", "2"]
        argv += ["-Q", f"benchmem{tag}", "-l", "info", "--without-gossip", "--without-mingle"]
        self.app = app
        self.proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self._ready = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:  # read to the end: a full pipe would block the worker
            if b" ready." in line:
                self._ready.set()

    def wait_idle(self) -> None:
        """Until the worker said "ready", plus ``SETTLE_S``."""
        if not self._ready.wait(READY_TIMEOUT_S):
            raise RuntimeError(f"worker {self.app} not ready (exit code {self.proc.poll()})")
        time.sleep(SETTLE_S)

    def footprint(self) -> Footprint:
        """The worker's and its children's memory now."""
        parent = psutil.Process(self.proc.pid)
        children = parent.children(recursive=True)
        rss = [p.memory_info().rss for p in [parent, *children]]
        uss = [p.memory_full_info().uss for p in children]
        n = max(len(children), 1)
        return Footprint(sum(rss) / 2**20, sum(rss[1:]) / n / 2**20, sum(uss) / n / 2**20)

    def stop(self) -> None:
        """Stop the worker (warm shutdown, then kill)."""
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _setup(quick: bool) -> Pair:
    # Both workers start once and stay idle; each round samples them again (alternately).
    workers = {"ours": IdleWorker("tasks"), "stock": IdleWorker(STOCK_APP)}
    try:
        for worker in workers.values():
            worker.wait_idle()
    except BaseException:
        for worker in workers.values():
            worker.stop()
        raise

    def side(name: str) -> float:
        time.sleep(0.5)
        found = workers[name].footprint()
        pair.notes[f"{name} per child RSS / USS MB"] = (
            f"{found.child_rss_mb:.0f} / {found.child_uss_mb:.0f}"
        )
        return found.total_mb

    def close() -> None:
        for worker in workers.values():
            worker.stop()

    pair = Pair(ours=lambda: side("ours"), peer=lambda: side("stock"), close=close)
    return pair


#: Goal 8 of issue 12: an idle syncguard worker within 1.3x of a stock Celery worker's memory.
BENCHMARKS = [
    Benchmark(
        name="idle worker memory (prefork -c 2, worker + children RSS)",
        unit="MB",
        peer_name="stock Celery worker",
        goal=1.3,
        setup=_setup,
        lower_is_better=True,
    )
]


def main() -> None:
    """One measurement of each (``python -m bench.worker_memory``)."""
    for name, app in (("syncguard", "tasks"), ("stock Celery", STOCK_APP)):
        worker = IdleWorker(app)
        try:
            worker.wait_idle()
            found = worker.footprint()
        finally:
            worker.stop()
        print(
            f"{name:14} total {found.total_mb:6.1f} MB; per child RSS {found.child_rss_mb:5.1f}"
            f" MB, USS {found.child_uss_mb:5.1f} MB"
        )


if __name__ == "__main__":
    main()
