"""Tasks the lifecycle tests run on real workers (loaded with `celery worker -I tests.workload`)."""

from __future__ import annotations

import time
from typing import Any

from safeguards.errors import AuthenticationFailure, TransientFailure
from safeguards.redis_state import get_redis, key
from tasks import app
from tasks.base import DEFERRALS, SafeguardedTask


def bump(marker: str) -> int:
    """Count one run of the job ``marker`` in Redis (shared by the worker and the test)."""
    return int(get_redis().incr(key("test-runs", marker)))


def runs(marker: str) -> int:
    """How often the job ``marker`` ran."""
    return int(get_redis().get(key("test-runs", marker)) or 0)


def _report(task: Any) -> dict[str, Any]:
    headers = task.request.headers or {}
    return {"retries": task.request.retries, "deferrals": int(headers.get(DEFERRALS) or 0)}


@app.task(
    bind=True,
    base=SafeguardedTask,
    name="tests.workload.flaky",
    max_retries=2,
    retry_backoff_base_s=0.05,
)
def flaky(self: SafeguardedTask, store_id: str, marker: str) -> dict[str, Any]:
    """Fails transiently while the marker's 'broken' flag is set in Redis."""
    bump(marker)
    with self.guard("messages.list"):
        if get_redis().exists(key("test-broken", marker)):
            raise TransientFailure("provider answered 503 Service Unavailable")
    return _report(self)


@app.task(bind=True, base=SafeguardedTask, name="tests.workload.revoked")
def revoked(self: SafeguardedTask, store_id: str, marker: str) -> None:
    """A permanent failure: the grant was revoked."""
    bump(marker)
    with self.guard("messages.get"):
        raise AuthenticationFailure("invalid_grant: token has been revoked")


@app.task(bind=True, base=SafeguardedTask, name="tests.workload.slow_call")
def slow_call(self: SafeguardedTask, store_id: str, marker: str, hold_s: float) -> dict[str, Any]:
    """Holds its provider call (and its concurrency lease) for ``hold_s`` seconds."""
    with self.guard("messages.get"):
        time.sleep(hold_s)
    bump(marker)
    return _report(self)
