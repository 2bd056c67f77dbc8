"""Maintenance tasks: diagnostics, safeguard mirroring, metrics and retention cleanup."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
from sqlalchemy import text

from models import CleanupOutcome
from safeguards import cleanup
from safeguards.circuit_breaker.breaker import flush_stats_to_postgres
from safeguards.health_metrics.collect import collect_metrics as write_snapshot
from safeguards.health_metrics.queue_depth import queue_depths
from safeguards.rate_limit.limiter import flush_usage_to_postgres
from safeguards.redis_state import get_redis
from syncguard.db import get_engine
from syncguard.services import current_services
from tasks import app
from tasks.queues import QUEUE_NAMES
from tasks.routine_logs import install_routine_run_filter

log = logging.getLogger(__name__)

# The worker imports this module (the app's includes) before its first run; Beat installs the
# same filter from its scheduler (tasks/beat.py).
install_routine_run_filter()


@app.task(name="tasks.maintenance.heartbeat", bind=True)  # type: ignore[untyped-decorator]
def heartbeat(self: Any) -> dict[str, Any]:
    """Prove this worker reaches PostgreSQL and Redis: the database's clock and a Redis PING."""
    with get_engine().connect() as conn:
        database_time = conn.execute(text("SELECT now()")).scalar_one()
    return {
        "worker": self.request.hostname,
        "database_time": database_time.isoformat(),
        "redis_ping": _redis_ping(current_services().redis_url),
    }


def _redis_ping(redis_url: str) -> bool:
    try:
        # The safeguards' own client: a Sentinel URL or a Cluster is reached as they reach it.
        return bool(get_redis(redis_url).ping())
    except redis.RedisError:
        # The heartbeat reports Redis as down rather than failing: the database half is still news.
        # No URL in the line: it may carry a password.
        log.warning("heartbeat: the safeguards' Redis did not answer PING", exc_info=True)
        return False


#: Seconds one mirror run may spend on rate-limit usage before leaving the rest to the next run
#: (the period is 5 s; each pass pops, reads and upserts up to ``FLUSH_BATCH`` stores). The
#: circuits have the same budget (``FLUSH_BUDGET_S``) and run beside it, so a run takes about
#: one budget, plus one chunk, however much changed.
USAGE_BUDGET_S = 1.0


@app.task(name="tasks.maintenance.mirror_safeguard_state")  # type: ignore[untyped-decorator]
def mirror_safeguard_state() -> dict[str, int]:
    """Mirror what changed since the last run, rate-limit usage and circuits, into their tables.

    Both read only their dirty sets (stores touched, circuits changed) in fixed-size chunks: one
    pipelined Redis round trip and one multi-row upsert per chunk, until the set is empty or the
    run's budget is spent. The two kinds run at once (circuits in a second thread): each mostly
    waits on Redis or PostgreSQL, so the run's wall time is the longer of the two, not their sum.
    Returns rows written per kind; raises what either flush raised.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mirror-circuits") as pool:
        circuits = pool.submit(flush_stats_to_postgres)
        rate_limits, started = 0, time.monotonic()
        while time.monotonic() - started < USAGE_BUDGET_S:
            written = flush_usage_to_postgres()
            rate_limits += written
            if written == 0:
                break
        return {"rate_limits": rate_limits, "circuits": circuits.result()}


@app.task(name="tasks.maintenance.collect_metrics")  # type: ignore[untyped-decorator]
def collect_metrics() -> dict[str, int]:
    """Snapshot queues, jobs in flight, backlog, circuits, usage and webhooks into the metrics."""
    with app.connection_for_read() as connection:
        depths = queue_depths(connection, QUEUE_NAMES)
    return write_snapshot(depths)


@app.task(name="tasks.maintenance.run_all_cleanup_tasks")  # type: ignore[untyped-decorator]
def run_all_cleanup_tasks(dry_run: bool = False) -> dict[str, Any]:
    """Delete every safeguard table's rows past retention in short batches; a summary per table."""
    results = cleanup.run_all_cleanup_tasks(dry_run=dry_run)
    return {
        "run_id": str(results[0].run_id) if results else None,
        "dry_run": dry_run,
        "failed": [r.table for r in results if r.outcome is CleanupOutcome.FAILED],
        "tables": {
            r.table: {
                "outcome": r.outcome.value,
                "rows_deleted": r.rows_deleted,
                "batches": len(r.batch_ms),
                "max_batch_ms": round(r.max_batch_ms, 1),
                "duration_ms": r.duration_ms,
                "complete": r.complete,
                "error_message": r.error_message,
            }
            for r in results
        },
    }
