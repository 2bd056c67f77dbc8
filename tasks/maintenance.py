"""Maintenance tasks: diagnostics now; retention cleanup, metrics and alerts join later."""

from __future__ import annotations

import logging
from typing import Any

import redis
from sqlalchemy import text

from safeguards.circuit_breaker import flush_stats_to_postgres
from safeguards.rate_limit import flush_usage_to_postgres
from syncguard.db import get_engine
from syncguard.services import current_services
from tasks import app

log = logging.getLogger(__name__)


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
        with redis.Redis.from_url(redis_url, socket_timeout=5) as client:
            return bool(client.ping())
    except redis.RedisError:
        # The heartbeat reports Redis as down rather than failing: the database half is still news.
        log.warning("heartbeat: Redis at %s did not answer PING", redis_url, exc_info=True)
        return False


@app.task(name="tasks.maintenance.mirror_safeguard_state")  # type: ignore[untyped-decorator]
def mirror_safeguard_state() -> dict[str, int]:
    """Mirror rate-limit usage and circuit counters from Redis into their tables."""
    return {"rate_limits": flush_usage_to_postgres(), "circuits": flush_stats_to_postgres()}
