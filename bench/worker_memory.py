"""Idle worker memory: ``celery -A tasks worker -P prefork -c 2`` against a stock Celery worker.

Both run on the same broker (each on a queue of its own), at ``-l info`` so their "ready" line
says when start-up is over; then, after ``SETTLE_S`` idle, the resident set (RSS, psutil) of
the worker and its two pool children is summed (lower is better, goal 8 of issue 12). The notes
add the per-child RSS and the unique set (USS: what a child does not share with its parent).
``python -m bench.worker_memory`` prints one measurement of each.
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


def measure(app: str) -> Footprint:
    """Start ``celery -A app worker -P prefork -c 2``, wait until idle, measure, stop it."""
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
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ready = threading.Event()

    def watch() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if b" ready." in line:
                ready.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        if not ready.wait(READY_TIMEOUT_S):
            raise RuntimeError(f"worker {app} did not become ready (exit code {proc.poll()})")
        time.sleep(SETTLE_S)
        parent = psutil.Process(proc.pid)
        children = parent.children(recursive=True)
        rss = [p.memory_info().rss for p in [parent, *children]]
        uss = [p.memory_full_info().uss for p in children]
        n = max(len(children), 1)
        return Footprint(sum(rss) / 2**20, sum(rss[1:]) / n / 2**20, sum(uss) / n / 2**20)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _setup(quick: bool) -> Pair:
    seen: dict[str, list[Footprint]] = {"ours": [], "stock": []}

    def side(name: str, app: str) -> float:
        found = measure(app)
        seen[name].append(found)
        pair.notes[f"{name} per child RSS / USS MB"] = (
            f"{found.child_rss_mb:.0f} / {found.child_uss_mb:.0f}"
        )
        return found.total_mb

    pair = Pair(ours=lambda: side("ours", "tasks"), peer=lambda: side("stock", STOCK_APP))
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
        found = measure(app)
        print(
            f"{name:14} total {found.total_mb:6.1f} MB; per child RSS {found.child_rss_mb:5.1f}"
            f" MB, USS {found.child_uss_mb:5.1f} MB"
        )


if __name__ == "__main__":
    main()
