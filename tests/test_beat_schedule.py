"""The Beat schedule names only tasks the workers register, on queues they consume."""

from __future__ import annotations

from beat_schedule import BEAT_SCHEDULE
from tasks import app
from tasks.queues import QUEUE_NAMES


def test_every_entry_names_a_registered_task_on_a_consumed_queue() -> None:
    app.loader.import_default_modules()
    for name, entry in BEAT_SCHEDULE.items():
        assert entry["task"] in app.tasks, f"{name}: {entry['task']} is not a registered task"
        assert entry["options"]["queue"] in QUEUE_NAMES, name


def test_the_schedule_covers_every_periodic_duty_of_the_system() -> None:
    tasks = {entry["task"] for entry in BEAT_SCHEDULE.values()}
    assert {
        "tasks.webhooks.renew_expiring_subscriptions",
        "tasks.webhooks.reconcile_stores",
        "tasks.webhooks.check_subscription_health",
        "tasks.maintenance.collect_metrics",
        "tasks.alerting.evaluate_alerts",
        "tasks.maintenance.mirror_safeguard_state",
        "tasks.maintenance.run_all_cleanup_tasks",
    } <= tasks
