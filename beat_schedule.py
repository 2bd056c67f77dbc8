"""The Beat schedule: which periodic task runs how often, on which queue."""

from __future__ import annotations

from typing import Any

from syncguard.settings import get_settings
from tasks.queues import MAINTENANCE, WEBHOOKS

#: How often a worker proves it reaches PostgreSQL and Redis, seconds.
HEARTBEAT_EVERY_S = 60.0

#: How often the safeguards' hot state in Redis is mirrored to PostgreSQL, seconds.
MIRROR_SAFEGUARDS_EVERY_S = 5.0

#: How often Beat looks for subscriptions inside their renewal window, seconds.
RENEW_SUBSCRIPTIONS_EVERY_S = 300.0

#: How often every live subscription's health is computed and logged, seconds.
CHECK_SUBSCRIPTION_HEALTH_EVERY_S = 60.0

#: How often every active store gets a reconciliation sync, seconds (a setting).
RECONCILE_STORES_EVERY_S = get_settings().reconciliation_interval_s

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
    "webhooks.renew_expiring_subscriptions": {
        "task": "tasks.webhooks.renew_expiring_subscriptions",
        "schedule": RENEW_SUBSCRIPTIONS_EVERY_S,
        "options": {"queue": WEBHOOKS, "expires": RENEW_SUBSCRIPTIONS_EVERY_S},
    },
    "webhooks.check_subscription_health": {
        "task": "tasks.webhooks.check_subscription_health",
        "schedule": CHECK_SUBSCRIPTION_HEALTH_EVERY_S,
        "options": {"queue": WEBHOOKS, "expires": CHECK_SUBSCRIPTION_HEALTH_EVERY_S},
    },
    "maintenance.reconcile_stores": {
        "task": "tasks.webhooks.reconcile_stores",
        "schedule": RECONCILE_STORES_EVERY_S,
        "options": {"queue": MAINTENANCE, "expires": RECONCILE_STORES_EVERY_S},
    },
}
