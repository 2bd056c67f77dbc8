"""The Beat schedule: which periodic task runs how often, on which queue."""

from __future__ import annotations

from typing import Any

from tasks.queues import MAINTENANCE

#: How often a worker proves it reaches PostgreSQL and Redis, seconds.
HEARTBEAT_EVERY_S = 60.0

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "maintenance.heartbeat": {
        "task": "tasks.maintenance.heartbeat",
        "schedule": HEARTBEAT_EVERY_S,
        # A heartbeat nobody ran in time is stale: expire it so an outage does not leave a backlog.
        "options": {"queue": MAINTENANCE, "expires": HEARTBEAT_EVERY_S},
    },
}
