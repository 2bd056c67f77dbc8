"""ArchivingTask: the base of every syncguard task, so that no failed job is acknowledged unseen.

Celery acknowledges a failed task (``acks_late`` acknowledges failures too) and keeps only a
result that expires; a task whose arguments do not fit its signature fails the same way. This
base hooks Celery's own task lifecycle, in the worker child, before the message is acknowledged:

- ``before_start`` binds the message's arguments to the task's signature. A mismatch (wrong
  count, unknown keyword) is archived as ``validation`` and the body never runs: Celery would
  raise the same TypeError on the call, and SafeguardedTask would retry it as if transient.
- ``on_failure`` archives any other failure of a task whose class does not archive its own
  (SafeguardedTask's ``__call__`` does, and says so with ``archives_own_failures``): a
  ``CallFailure`` keeps its category; a failure after retries, or of the infrastructure
  (database, Redis, network, time limit), is ``transient_exhausted``; any other is
  ``validation`` (malformed input or a bug: running the same message again cannot help).

A task run in process (``apply()``, a direct call) is not archived: its caller gets the error.

- ``task_internal_error`` (Celery's signal for an error outside the task body, e.g. the result
  backend unreachable while storing the outcome) archives the job with what is known. Celery
  acknowledges such a message whatever a receiver does, so this one is best effort, logged.

If the archive cannot be written the message is not acknowledged: ``Reject(requeue=True)``
hands it back to the broker (Celery's worker honours a Reject raised from these hooks), after a
pause that doubles with each consecutive archive failure in this process, up to
``ARCHIVE_RETRY_MAX_S``, so a database outage cannot spin a message through the broker.

``tasks/__init__`` makes this the app's ``task_cls``; SafeguardedTask derives from it.
"""

from __future__ import annotations

import inspect
import logging
import time
import uuid
from typing import Any

from celery import Task
from celery.app.task import Context
from celery.exceptions import Reject, SoftTimeLimitExceeded
from celery.signals import task_internal_error
from redis import RedisError
from sqlalchemy.exc import InterfaceError, OperationalError

from models import FailureCategory
from safeguards.backoff import compute_backoff
from safeguards.dead_letter.archive import error_context_from, move_to_dead_letter_queue
from safeguards.errors import CallFailure, SafeguardUnavailable, ValidationFailure

log = logging.getLogger(__name__)

#: Pause before handing back a message whose archive failed once, seconds; doubles per failure.
ARCHIVE_RETRY_BASE_S = 0.5
#: Longest such pause, seconds.
ARCHIVE_RETRY_MAX_S = 30.0
# Set on the request once this run's failure is archived, so on_failure does not write twice.
_ARCHIVED = "syncguard_archived_entry"
# Consecutive archive failures in this process (reset by a success); sizes the pause.
_archive_failures = 0
# Failures of what a task runs on rather than of its input: worth running again later.
_INFRASTRUCTURE_ERRORS = (
    OSError,  # includes ConnectionError and TimeoutError
    OperationalError,
    InterfaceError,
    RedisError,
    SafeguardUnavailable,
    SoftTimeLimitExceeded,
)


class ArchivingTask(Task):  # type: ignore[misc]
    """Base of every task: bad arguments and failures end in the archive (see module doc)."""

    #: True where the class's own lifecycle archives its failures (SafeguardedTask.__call__).
    archives_own_failures: bool = False

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        """Refuse arguments the task's signature cannot take: archived, the body never runs."""
        try:
            inspect.signature(self.run).bind(*(args or ()), **(kwargs or {}))
        except TypeError as exc:
            failure = ValidationFailure(f"{self.name} cannot take these arguments: {exc}")
            if not _in_process(self):
                self.archive(failure, FailureCategory.VALIDATION)
            raise failure from exc

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """Archive the failed job unless its class or ``before_start`` already did."""
        if self.archives_own_failures or _in_process(self):
            return
        if getattr(self.request, _ARCHIVED, None) is not None:
            return
        self.archive(exc, failure_category(exc, int(self.request.retries or 0)))

    def archive(self, exc: BaseException, category: FailureCategory) -> uuid.UUID:
        """Write the complete job to the archive; if that fails, hand the message back."""
        global _archive_failures
        request = self.request
        try:
            entry_id = move_to_dead_letter_queue(
                request.id,
                self.name,
                f"{type(exc).__name__}: {exc}",
                int(request.retries or 0),
                job_data(self),
                failure_category=category,
                error_context=error_context_from(exc, worker=request.hostname),
            )
        except Exception as db_exc:
            pause_s = compute_backoff(
                _archive_failures,
                base_s=ARCHIVE_RETRY_BASE_S,
                max_backoff_s=ARCHIVE_RETRY_MAX_S,
                jitter=False,
            )
            _archive_failures += 1
            log.error(
                "archiving %s[%s] failed, requeueing in %.1fs: %s",
                self.name,
                request.id,
                pause_s,
                db_exc,
            )
            time.sleep(pause_s)
            raise Reject(db_exc, requeue=True) from db_exc
        _archive_failures = 0
        setattr(request, _ARCHIVED, entry_id)
        return entry_id


def failure_category(exc: BaseException, retries: int) -> FailureCategory:
    """The archive category of a failure in a task that does not classify its own."""
    if isinstance(exc, CallFailure):
        return exc.category
    if retries > 0 or isinstance(exc, _INFRASTRUCTURE_ERRORS):
        return FailureCategory.TRANSIENT_EXHAUSTED
    return FailureCategory.VALIDATION


def _in_process(task: Task) -> bool:
    """Whether ``task`` runs in its caller's process (no message to acknowledge)."""
    return bool(task.request.is_eager or task.request.called_directly)


def job_data(task: Task, request: Context | None = None) -> dict[str, Any]:
    """Everything replay needs to publish ``task``'s job (default: its current one) again."""
    request = task.request if request is None else request
    delivery = request.delivery_info or {}
    return {
        "task": task.name,
        "args": list(request.args or ()),
        "kwargs": dict(request.kwargs or {}),
        "headers": dict(request.headers or {}),
        "options": {
            "queue": delivery.get("routing_key") or task.queue,
            "priority": delivery.get("priority"),
        },
        "retries": request.retries,
        "root_id": request.root_id,
        "parent_id": request.parent_id,
    }


@task_internal_error.connect(dispatch_uid="syncguard.archive_internal_error")  # type: ignore[untyped-decorator]
def archive_internal_error(
    sender: Task | None = None,
    task_id: str | None = None,
    request: dict[str, Any] | None = None,
    exception: BaseException | None = None,
    **_: Any,
) -> None:
    """Archive a job whose run failed outside its body (its outcome unknown); never raises."""
    if not isinstance(sender, ArchivingTask) or task_id is None or exception is None:
        return
    context = Context(request or {})
    if context.is_eager:
        return
    retries = int(context.retries or 0)
    try:
        move_to_dead_letter_queue(
            task_id,
            sender.name,
            f"internal error (outcome unknown): {type(exception).__name__}: {exception}",
            retries,
            job_data(sender, context),
            failure_category=failure_category(exception, retries),
            error_context=error_context_from(exception, worker=context.hostname),
        )
    except Exception:
        log.exception("archiving %s[%s] after an internal error failed", sender.name, task_id)
