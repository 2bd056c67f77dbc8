"""A stock Celery app with one no-op task and nothing else: the peer of the worker benchmarks.

``celery -A bench.stock_worker worker``; imports only Celery (the syncguard side must not lend
it any of our modules). Broker from BROKER_URL, else REDIS_URL.
"""

from __future__ import annotations

import os

from celery import Celery

app = Celery(
    "stock", broker=os.environ.get("BROKER_URL") or os.environ.get("REDIS_URL") or "redis://"
)


@app.task(name="bench.stock.noop")  # type: ignore[untyped-decorator]
def noop() -> None:
    """The stock worker's only task."""
