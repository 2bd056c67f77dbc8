"""Per-process set-up: secret-free logging in every Celery process, fresh pools in children.

Also the observability of each task, attached once here rather than in each task: the task's
ids are bound to its log lines (``syncguard.log_context``) from ``task_prerun`` to
``task_postrun``, and set as attributes of its trace span; tracing itself is configured in the
process that runs the tasks (each prefork child; the worker itself for in-process pools).
"""

from __future__ import annotations

import inspect
import logging
import uuid
from contextvars import Token
from functools import lru_cache
from typing import Any

from celery import Task
from celery.concurrency import get_implementation
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    beat_init,
    before_task_publish,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
)
from opentelemetry import trace
from sqlalchemy.exc import SQLAlchemyError

from models import Store, SyncJob
from syncguard import log_context
from syncguard.db import dispose_engines, service_session
from syncguard.logging_config import install_scrubber, use_formatter
from syncguard.tracing import configure_tracing

log = logging.getLogger(__name__)

#: The task arguments bound to log lines and spans, by parameter name.
BOUND_ARGUMENTS = ("store_id", "job_id", "business_id")
#: Stores whose business is remembered per process (a store never changes business).
STORE_CACHE_SIZE = 4096

# Worker, beat and Flower all load the app (``-A tasks``): their log records, whichever
# handlers Celery or tornado set up, are scrubbed of query values, keys and tokens.
install_scrubber()

_tokens: dict[str, Token[Any]] = {}


@after_setup_logger.connect  # type: ignore[untyped-decorator]
@after_setup_task_logger.connect  # type: ignore[untyped-decorator]
def _log_format(logger: logging.Logger, **_: Any) -> None:
    # Celery configured its handlers (worker and beat): JSON lines when the setting asks.
    use_formatter(logger)


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _fresh_database_pool(**_: Any) -> None:
    # A forked child must not reuse the parent's pooled connections (SQLAlchemy's rule).
    dispose_engines()
    _observe_tasks("syncguard-worker")


@worker_init.connect  # type: ignore[untyped-decorator]
def _in_process_pool(sender: Any = None, **_: Any) -> None:
    # solo and threads pools run tasks in the worker itself: no worker_process_init there.
    pool = get_implementation(getattr(sender, "pool_cls", None) or "prefork")
    if pool.__module__ != "celery.concurrency.prefork":
        _observe_tasks("syncguard-worker")


@beat_init.connect  # type: ignore[untyped-decorator]
def _beat_tracing(**_: Any) -> None:
    configure_tracing("syncguard-beat")


def _observe_tasks(service_name: str) -> None:
    configure_tracing(service_name)
    # Connected after the Celery instrumentation's own handlers: when ours run, the task's
    # span is the current one.
    task_prerun.connect(_bind_task, weak=False)
    task_postrun.connect(_unbind_task, weak=False)


def _bind_task(task_id: str, task: Task, args: Any = (), kwargs: Any = None, **_: Any) -> None:
    fields = _with_business(task_arguments(task, tuple(args or ()), dict(kwargs or {})))
    _tokens[task_id] = log_context.bind(task_id=task_id, task_name=task.name, **fields)
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({f"syncguard.{name}": value for name, value in fields.items()})


@before_task_publish.connect  # type: ignore[untyped-decorator]
def _publish_attributes(sender: str | None = None, body: Any = None, **_: Any) -> None:
    # Connected on import, so before the Celery instrumentation's own handler: the current
    # span is the publisher's (the webhook request's in the API), which gets the store and
    # business of the work it enqueues.
    span = trace.get_current_span()
    if not span.is_recording() or sender is None:
        return
    from tasks import app  # the app this module's package defines (imported after it)

    try:
        args, kwargs, _embed = body  # Celery's message protocol 2
    except (TypeError, ValueError):
        return
    task = app.tasks.get(sender)
    if task is not None:
        fields = task_arguments(task, tuple(args or ()), dict(kwargs or {}))
    else:  # published by name (the API sends tasks it does not import): the job knows its store
        fields = _job_scope(kwargs.get("job_id")) if isinstance(kwargs, dict) else {}
    fields = _with_business(fields)
    fields.pop("job_id", None)  # a request may cover several jobs; the task span names its own
    span.set_attributes({f"syncguard.{name}": value for name, value in fields.items()})


def _unbind_task(task_id: str, **_: Any) -> None:
    token = _tokens.pop(task_id, None)
    if token is not None:
        try:
            log_context.unbind(token)
        except ValueError:  # bound in another context (a pool that switched threads)
            log.debug("task %s: log context bound elsewhere, left as is", task_id)


def task_arguments(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, str]:
    """The ``BOUND_ARGUMENTS`` among the task's arguments, by name, as text."""
    try:
        bound = inspect.signature(task.run).bind_partial(*args, **kwargs).arguments
    except (TypeError, ValueError):  # arguments that do not fit: the task will say so itself
        bound = kwargs
    return {name: str(bound[name]) for name in BOUND_ARGUMENTS if bound.get(name) is not None}


def _with_business(fields: dict[str, str]) -> dict[str, str]:
    """``fields`` with the business of its store added when the arguments did not name it."""
    if "store_id" in fields and "business_id" not in fields:
        business_id = business_of(fields["store_id"])
        if business_id is not None:
            fields["business_id"] = business_id
    return fields


@lru_cache(maxsize=STORE_CACHE_SIZE)
def _cached_business_of(store_id: uuid.UUID) -> str:
    with service_session() as session:
        store = session.get(Store, store_id)
        business_id = None if store is None else str(store.business_id)
    if business_id is None:
        raise LookupError(store_id)  # not cached: the store may exist by the next task
    return business_id


def _job_scope(job_id: object) -> dict[str, str]:
    """The store and business of sync job ``job_id`` (empty when unknown or not a job id)."""
    try:
        with service_session() as session:
            job = session.get(SyncJob, uuid.UUID(str(job_id)))
            if job is None:
                return {}
            return {"store_id": str(job.store_id), "business_id": str(job.business_id)}
    except ValueError:
        return {}
    except SQLAlchemyError as exc:
        log.warning("job %s: store not found for the trace attributes: %s", job_id, exc)
        return {}


def business_of(store_id: str) -> str | None:
    """The business of ``store_id``, or None (no such store, not a UUID, database down)."""
    try:
        return _cached_business_of(uuid.UUID(store_id))
    except (ValueError, LookupError):
        return None
    except SQLAlchemyError as exc:
        log.warning("store %s: business not found for the log context: %s", store_id, exc)
        return None
