"""A task the provider-app quota tests run on real workers (``celery worker -I`` this module)."""

from __future__ import annotations

import time
from typing import Any

from safeguards.redis_state import get_redis, key
from tasks import app
from tasks.base import DEFERRALS, SafeguardedTask


def call_times(marker: str) -> list[float]:
    """When each guarded call of the jobs ``marker`` went out, epoch seconds, in order."""
    return sorted(float(t) for t in get_redis().lrange(key("test-app-calls", marker), 0, -1))


@app.task(bind=True, base=SafeguardedTask, name="tests.app_quota_workload.graph_call")
def graph_call(self: SafeguardedTask, store_id: str, marker: str) -> dict[str, Any]:
    """One guarded Graph call, its time recorded the moment the guard let it go."""
    with self.guard("delta"):
        get_redis().rpush(key("test-app-calls", marker), repr(time.time()))
    headers = self.request.headers or {}
    return {"retries": self.request.retries, "deferrals": int(headers.get(DEFERRALS) or 0)}
