"""The Celery app of syncguard: ``celery -A tasks worker|beat|flower``."""

from __future__ import annotations

from celery import Celery

#: Modules whose tasks every worker registers; later areas add theirs here.
TASK_MODULES = ["tasks.maintenance", "tasks.sync", "tasks.outbound", "tasks.webhooks"]

app = Celery("syncguard", include=TASK_MODULES)
# Lazy: the configuration (and any embedded server it needs) loads on first use, not on import.
app.config_from_object("celeryconfig")

__all__ = ["TASK_MODULES", "app"]
