"""The Celery app of syncguard: ``celery -A tasks worker|beat|flower``."""

from __future__ import annotations

from celery import Celery

#: Modules whose tasks every worker registers; later areas add theirs here.
TASK_MODULES = [
    "tasks.maintenance",
    "tasks.sync.pipeline",
    "tasks.outbound.delivery",
    "tasks.webhooks",
    "tasks.renewal",
    "tasks.sync.reconcile",
    "tasks.alerting",
    "tasks.recovery",
    "tasks.partitions",
]

# Every task derives from ArchivingTask: bad arguments and failures end in the archive.
app = Celery("syncguard", include=TASK_MODULES, task_cls="tasks.archiving:ArchivingTask")
# Lazy: the configuration (and any embedded server it needs) loads on first use, not on import.
app.config_from_object("celeryconfig")

# Hooks every process needs once the app exists: redacted argument reprs on every published
# message, and fresh database connections in each forked worker child.
from tasks import process_hooks, redaction_hooks  # noqa: E402, F401

redaction_hooks.install(app)

__all__ = ["TASK_MODULES", "app"]
