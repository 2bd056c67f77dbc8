"""Global-limit exactness: 4 worker processes under one 60/min limit, ours against Celery's.

- Ours: 4 processes each making guarded calls (``tasks.guard.guarded_call``, cost 1, a store
  whose minute limit is 60) as fast as they are let, for W seconds (W < 60: one minute window);
  a refused call waits its retry-after (capped at 0.5 s) and asks again.
- Celery: 4 workers (``-P solo``, one process each) consuming a task declared with
  ``rate_limit="60/m"`` (``bench.global_limit_app``), 4 x 120 tasks queued, for W seconds.
The figure is admitted / limit: 1.0 means exactly the limit was admitted; more breaks the limit
(Celery's rate_limit is per worker). Ours admitting more than the limit fails the benchmark.
One measurement per run (W = 20 s quick, 60 s full, both sides at once), not rounds: the
rounds repeat it.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from bench.harness import Benchmark, Pair
from models import Provider
from safeguards.rate_limit.limits import LimitOverrides, RateLimits
from safeguards.redis_state import get_redis
from syncguard.services import ensure_services
from syncguard.settings import get_settings

LIMIT = 60
WORKERS = 4
BIG = 10**9
READY_TIMEOUT_S = 90.0


class _Overrides:
    def provider(self, store_id: str) -> Provider:
        return Provider.GMAIL

    def overrides(self, store_id: str) -> LimitOverrides:
        return _NONE


_NONE = LimitOverrides()


def _our_worker(store: uuid.UUID, until: float, admitted: Any) -> None:
    from safeguards.errors import Refused
    from safeguards.rate_limit import limiter as limiter_module
    from tasks import provider_apps
    from tasks.guard import CallScope, guarded_call

    # No provider-app credentials (no PostgreSQL here): the store's own limit is what counts.
    provider_apps._apps[store] = (float("inf"), None)

    limiter_module._DEFAULT[:] = [
        limiter_module.RateLimiter(
            get_redis(),
            limits={p: RateLimits(LIMIT, BIG, BIG, 0) for p in Provider},
            stores=_Overrides(),  # type: ignore[arg-type]
        )
    ]
    scope = CallScope(store, Provider.GMAIL, "bench-limit")
    count = 0
    while time.time() < until:
        try:
            with guarded_call(scope, "op", cost=1):
                count += 1
        except Refused as refused:
            time.sleep(min(0.5, max(0.01, refused.retry_after_s), max(0.0, until - time.time())))
    with admitted.get_lock():
        admitted.value += count


def _ours(window_s: float) -> int:
    ctx = multiprocessing.get_context("fork")
    admitted = ctx.Value("i", 0)
    until = time.time() + window_s
    store = uuid.uuid4()
    procs = [ctx.Process(target=_our_worker, args=(store, until, admitted)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(window_s + 60)
    if any(p.exitcode != 0 for p in procs):
        raise RuntimeError(f"a guard process failed: exit codes {[p.exitcode for p in procs]}")
    return int(admitted.value)


def _start_worker(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
    log = Path(tempfile.mkstemp(prefix="bench-limit-worker-", suffix=".log")[1])
    argv = [sys.executable, "-m", "celery", "-A", "bench.global_limit_app", "worker", "-P", "solo"]
    argv += ["-l", "info", "-n", f"limit-{uuid.uuid4().hex[:6]}@%h"]
    argv += ["--without-mingle", "--without-gossip", "--without-heartbeat"]
    with log.open("w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    return proc, log


def _celery(window_s: float, redis_url: str) -> int:
    prefix = f"bench-limit-{uuid.uuid4().hex[:8]}:"
    env = {**os.environ, "REDIS_URL": redis_url, "BENCH_LIMIT_PREFIX": prefix}
    workers = [_start_worker(env) for _ in range(WORKERS)]
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        for proc, log in workers:
            while " ready." not in log.read_text():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"limit worker did not start: {log.read_text()[-2000:]}")
                time.sleep(0.2)
        client = Celery("limit-client", broker=redis_url)
        client.conf.broker_transport_options = {"global_keyprefix": prefix}
        for _ in range(WORKERS * 2 * LIMIT):
            client.send_task("bench.limited", queue="celery", ignore_result=True)
        time.sleep(window_s)
        return int(redis.Redis.from_url(redis_url).get(f"{prefix}ran") or 0)
    finally:
        for proc, _ in workers:
            proc.kill()
        for proc, _ in workers:
            proc.wait(30)


def _setup(quick: bool) -> Pair:
    window_s = 20.0 if quick else 60.0
    redis_url = ensure_services(get_settings()).redis_url
    found: dict[str, int] = {}
    peer = threading.Thread(target=lambda: found.update(celery=_celery(window_s, redis_url)))
    peer.start()
    time.sleep(3.0)  # the workers' start-up overlaps; the counted windows need not coincide
    found["ours"] = _ours(window_s)
    peer.join()
    if "celery" not in found:
        raise RuntimeError("the Celery peer did not finish")
    if found["ours"] > LIMIT:
        raise AssertionError(f"ours admitted {found['ours']} > {LIMIT} in {window_s:.0f} s")
    pair = Pair(ours=lambda: found["ours"] / LIMIT, peer=lambda: found["celery"] / LIMIT)
    pair.notes[f"admitted in {window_s:.0f} s, limit {LIMIT}/min, {WORKERS} workers"] = (
        f"ours {found['ours']}, Celery rate_limit {found['celery']} (one measurement)"
    )
    return pair


#: The issue's exactness check: ours admits the limit, Celery's per-worker limit its multiple.
BENCHMARKS = [
    Benchmark(
        name="global 60/min limit across 4 workers (admitted/limit)",
        unit="admitted/limit",
        peer_name="Celery rate_limit",
        goal=1.0,
        setup=_setup,
        lower_is_better=True,
    )
]
