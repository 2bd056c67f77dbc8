"""A stock Celery app on the same broker: the peer of our configuration (``-A bench.stock_app``).

Only what any Celery user sets: broker and result backend URLs (REDIS_URL), and a key prefix
so the benchmark's keys stay apart from everything else on a shared Redis.
"""

from __future__ import annotations

import os

from celery import Celery

_prefix = {"global_keyprefix": os.environ.get("BENCH_STOCK_PREFIX", "bench-stock:")}
app = Celery("stock", broker=os.environ["REDIS_URL"], backend=os.environ["REDIS_URL"])
app.conf.broker_transport_options = _prefix
app.conf.result_backend_transport_options = _prefix


@app.task(name="bench.plain")  # type: ignore[untyped-decorator]
def plain() -> None:
    """A no-op."""
