"""The Beat schedule: which periodic task runs how often, on which queue."""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

from syncguard.settings import get_settings
from tasks.queues import MAINTENANCE, WEBHOOKS

#: How often a worker proves it reaches PostgreSQL and Redis, seconds.
HEARTBEAT_EVERY_S = get_settings().heartbeat_every_s

#: How often the safeguards' hot state in Redis is mirrored to PostgreSQL, seconds.
MIRROR_SAFEGUARDS_EVERY_S = 5.0

#: How often Beat looks for subscriptions inside their renewal window, seconds.
RENEW_SUBSCRIPTIONS_EVERY_S = 300.0

#: How often every live subscription's health is computed and logged, seconds.
CHECK_SUBSCRIPTION_HEALTH_EVERY_S = 60.0

#: How often Beat snapshots the health metrics, seconds (a setting).
COLLECT_METRICS_EVERY_S = get_settings().metrics_collect_interval_s

#: How often every alert rule is evaluated, seconds.
EVALUATE_ALERTS_EVERY_S = 60.0

#: How often every active store gets a reconciliation sync, seconds (a setting).
RECONCILE_STORES_EVERY_S = get_settings().reconciliation_interval_s

#: When the daily retention cleanup runs: 03:30 in the app's timezone (UTC), a quiet hour.
RETENTION_CLEANUP_AT = crontab(hour=3, minute=30)

#: A cleanup no worker picked up within this long waits for the next day's, seconds.
RETENTION_CLEANUP_EXPIRES_S = 12 * 3600.0

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
    "maintenance.collect_metrics": {
        "task": "tasks.maintenance.collect_metrics",
        "schedule": COLLECT_METRICS_EVERY_S,
        "options": {"queue": MAINTENANCE, "expires": COLLECT_METRICS_EVERY_S},
    },
    "alerting.evaluate_alerts": {
        "task": "tasks.alerting.evaluate_alerts",
        "schedule": EVALUATE_ALERTS_EVERY_S,
        "options": {"queue": MAINTENANCE, "expires": EVALUATE_ALERTS_EVERY_S},
    },
    "maintenance.run_all_cleanup_tasks": {
        "task": "tasks.maintenance.run_all_cleanup_tasks",
        "schedule": RETENTION_CLEANUP_AT,
        "options": {"queue": MAINTENANCE, "expires": RETENTION_CLEANUP_EXPIRES_S},
    },
    "maintenance.reconcile_stores": {
        "task": "tasks.webhooks.reconcile_stores",
        "schedule": RECONCILE_STORES_EVERY_S,
        "options": {"queue": MAINTENANCE, "expires": RECONCILE_STORES_EVERY_S},
    },
}
