"""Celery's own rate limiting, as a user would set it: ``rate_limit="60/m"`` on a task.

``celery -A bench.global_limit_app worker``; each run of the task counts itself in Redis so
the benchmark can read how many ran. Celery enforces ``rate_limit`` per worker (a token bucket
in each worker's consumer, Celery docs "Task.rate_limit"), so N workers run up to N x the rate.
"""

from __future__ import annotations

import os

import redis
from celery import Celery

PREFIX = os.environ.get("BENCH_LIMIT_PREFIX", "bench-limit:")
RATE = "60/m"

app = Celery("limit-peer", broker=os.environ["REDIS_URL"])
app.conf.broker_transport_options = {"global_keyprefix": PREFIX}
app.conf.worker_prefetch_multiplier = 1
_counter = redis.Redis.from_url(os.environ["REDIS_URL"])


@app.task(name="bench.limited", rate_limit=RATE, ignore_result=True)  # type: ignore[untyped-decorator]
def limited() -> None:
    """One admitted call: counted under the run's prefix."""
    _counter.incr(f"{PREFIX}ran")
