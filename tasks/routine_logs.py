"""Quiet upkeep: Celery's per-run INFO lines of Beat's frequent maintenance tasks are dropped.

The safeguard mirror runs every 5 s and the metrics collector and heartbeat every minute: at
INFO, Beat ("Sending due task") and every worker ("received", "succeeded") would log each run,
thousands of lines a day that drown everything else. A failure or a retry is still logged (its
own line, or a level above INFO), and with the root logger at DEBUG (``-l debug``) every run is.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

__all__ = ["ROUTINE_TASKS", "RoutineRunFilter", "install_routine_run_filter"]

#: The tasks whose every run is routine (names as Celery registers them).
ROUTINE_TASKS = frozenset(
    {
        "tasks.maintenance.mirror_safeguard_state",
        "tasks.maintenance.collect_metrics",
        "tasks.maintenance.heartbeat",
    }
)
#: The loggers of those lines: Beat's (Celery's scheduler and ours, tasks.beat), the worker's on
#: receipt, the task tracer's on success.
_RUN_LOGGERS = ("celery.beat", "tasks.beat", "celery.worker.strategy", "celery.app.trace")


class RoutineRunFilter(logging.Filter):
    """Drops Celery's INFO line about one run of a ``ROUTINE_TASKS`` task, unless at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a routine run's INFO line (Celery names the task in its arguments)."""
        if record.levelno != logging.INFO or logging.getLogger().isEnabledFor(logging.DEBUG):
            return True
        args = record.args
        if isinstance(args, Mapping):  # worker: {"name": task, "id": ...}
            return args.get("name") not in ROUTINE_TASKS
        # Beat: "Scheduler: Sending due task %s (%s)" % (entry name, task name)
        return not (isinstance(args, tuple) and len(args) == 2 and args[1] in ROUTINE_TASKS)


def install_routine_run_filter() -> None:
    """Put the filter on Celery's run loggers (idempotent); it survives Celery's handler set-up."""
    for name in _RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RoutineRunFilter) for f in logger.filters):
            logger.addFilter(RoutineRunFilter())
