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

#: Reconciliation runs this many times per ``reconciliation_interval_s``, each requesting only
#: the stores not synced for the interval minus one period (tasks/sync/reconcile.py): every store
#: is still read once per interval, and the work is spread evenly instead of arriving at once.
RECONCILE_SLICES = 5

#: How often reconciliation looks for stores due for a sync, seconds (a setting / slices).
RECONCILE_STORES_EVERY_S = get_settings().reconciliation_interval_s / RECONCILE_SLICES

#: How often the recovery sweep re-publishes sync jobs a dead worker or a lost message left
#: behind, seconds (a setting: part of the recovery bound, see tasks/recovery.py).
RECOVER_SYNC_JOBS_EVERY_S = get_settings().sync_recovery_sweep_s

#: How often the outbound sweep re-publishes messages the broker lost, seconds (a setting: part
#: of the outbound recovery bound, see tasks/outbound/ledger.py).
RECOVER_OUTBOUND_EVERY_S = get_settings().outbound_recovery_sweep_s

#: How often Beat creates the history tables' day partitions ahead, seconds (tasks/partitions.py).
ENSURE_PARTITIONS_EVERY_S = 3600.0

#: When the daily retention cleanup runs: 03:30 in the app's timezone (UTC), a quiet hour.
RETENTION_CLEANUP_AT = crontab(hour=3, minute=30)

#: A cleanup no worker picked up within this long waits for the next day's, seconds.
RETENTION_CLEANUP_EXPIRES_S = 12 * 3600.0


def _every(task: str, seconds: float, queue: str) -> dict[str, Any]:
    """An entry run every ``seconds``; a run nobody picked up within one period expires.

    Expiring keeps an outage from leaving a backlog of stale periodic runs behind it.
    """
    return {"task": task, "schedule": seconds, "options": {"queue": queue, "expires": seconds}}


BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "maintenance.heartbeat": _every("tasks.maintenance.heartbeat", HEARTBEAT_EVERY_S, MAINTENANCE),
    "maintenance.mirror_safeguard_state": _every(
        "tasks.maintenance.mirror_safeguard_state", MIRROR_SAFEGUARDS_EVERY_S, MAINTENANCE
    ),
    "webhooks.renew_expiring_subscriptions": _every(
        "tasks.webhooks.renew_expiring_subscriptions", RENEW_SUBSCRIPTIONS_EVERY_S, WEBHOOKS
    ),
    "webhooks.check_subscription_health": _every(
        "tasks.webhooks.check_subscription_health", CHECK_SUBSCRIPTION_HEALTH_EVERY_S, WEBHOOKS
    ),
    "maintenance.collect_metrics": _every(
        "tasks.maintenance.collect_metrics", COLLECT_METRICS_EVERY_S, MAINTENANCE
    ),
    "alerting.evaluate_alerts": _every(
        "tasks.alerting.evaluate_alerts", EVALUATE_ALERTS_EVERY_S, MAINTENANCE
    ),
    "maintenance.reconcile_stores": _every(
        "tasks.webhooks.reconcile_stores", RECONCILE_STORES_EVERY_S, MAINTENANCE
    ),
    "maintenance.recover_sync_jobs": _every(
        "tasks.recovery.recover_sync_jobs", RECOVER_SYNC_JOBS_EVERY_S, MAINTENANCE
    ),
    "maintenance.recover_outbound_messages": _every(
        "tasks.outbound.ledger.recover_outbound_messages", RECOVER_OUTBOUND_EVERY_S, MAINTENANCE
    ),
    "maintenance.ensure_history_partitions": _every(
        "tasks.partitions.ensure_history_partitions", ENSURE_PARTITIONS_EVERY_S, MAINTENANCE
    ),
    "maintenance.run_all_cleanup_tasks": {
        "task": "tasks.maintenance.run_all_cleanup_tasks",
        "schedule": RETENTION_CLEANUP_AT,
        "options": {"queue": MAINTENANCE, "expires": RETENTION_CLEANUP_EXPIRES_S},
    },
}
