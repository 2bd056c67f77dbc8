"""The Beat schedule: which periodic task runs how often, on which queue."""

from __future__ import annotations

from typing import Any

from tasks.queues import MAINTENANCE

#: How often a worker proves it reaches PostgreSQL and Redis, seconds.
HEARTBEAT_EVERY_S = 60.0

#: How often the safeguards' hot state in Redis is mirrored to PostgreSQL, seconds.
MIRROR_SAFEGUARDS_EVERY_S = 5.0

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "maintenance.heartbeat": {
        "task": "tasks.maintenance.heartbeat",
        "schedule": HEARTBEAT_EVERY_S,
        # A heartbeat nobody ran in time is stale: expire it so an outage does not leave a backlog.
        "options": {"queue": MAINTENANCE, "expires": HEARTBEAT_EVERY_S},
    },
    "maintenance.mirror_safeguard_state": {
        "task": "tasks.maintenance.mirror_safeguard_state",
        "schedule": MIRROR_SAFEGUARDS_EVERY_S,
        "options": {"queue": MAINTENANCE, "expires": MIRROR_SAFEGUARDS_EVERY_S},
    },
}
