"""SafeguardedTask: the one place the task lifecycle around provider calls is attached.

A refusal by a safeguard defers the job (re-published with a countdown, the retry count kept);
transient failures retry with full-jitter backoff, never sooner than the provider's Retry-After
(which the guard also sets on the store's limiter, so every worker waits); permanent failures
and exhausted retries go to the dead-letter archive before the message is acknowledged. Every
countdown is capped at ``max_backoff_s``, which celeryconfig adds into the broker's visibility
timeout, so a job waiting for its countdown in a worker is never redelivered to another one.
A fault inside the retry, deferral or archive path hands the message back (tasks/lifecycle.py).
"""

from __future__ import annotations

import logging
import time
import uuid
from contextlib import AbstractContextManager, suppress
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from celery.exceptions import Retry

from models import FailureCategory, MetricType, Provider, Store
from safeguards.backoff import compute_backoff, throttle_backoff
from safeguards.dead_letter.archive import error_context_from, move_to_dead_letter_queue
from safeguards.errors import (
    CallFailure,
    PermanentFailure,
    Refused,
    ThrottledFailure,
    ValidationFailure,
)
from safeguards.health_metrics.prometheus import count_task
from safeguards.health_metrics.recorder import record_metric
from syncguard.db import service_session
from syncguard.settings import get_settings
from tasks.archiving import ArchivingTask
from tasks.events import announce
from tasks.guard import CallScope, default_classifier, guarded_call, preflight
from tasks.lifecycle import handing_back, too_long

log = logging.getLogger(__name__)

#: Message headers that carry a job's deferral history across re-publications.
DEFERRED_SINCE = "syncguard_deferred_since"
DEFERRALS = "syncguard_deferrals"
_DEFERRAL_HEADERS = frozenset({DEFERRED_SINCE, DEFERRALS})


class SafeguardedTask(ArchivingTask):
    """Base class of every task that calls a provider; see the module docstring."""

    #: ``__call__`` archives every failure itself (ArchivingTask.on_failure stands aside).
    archives_own_failures = True
    #: Retries of a transient failure before the job is archived.
    max_retries = 5
    #: Delay before the first retry, seconds; doubles per retry, full jitter.
    retry_backoff_base_s: float = 2.0
    #: Circuit the task's calls share per store; None means one circuit per provider.
    circuit_name: str | None = None
    #: Name of the task argument that holds the store id.
    store_arg: str = "store_id"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started, outcome = time.monotonic(), "succeeded"
        # On the request (one per run), so an archive entry can say when this attempt began.
        self.request.attempt_started_at = datetime.now(UTC)
        try:
            if (stale := self.stale_result()) is not None:  # acknowledged unrun
                outcome = "stale"
                return stale
            preflight(self.call_scope())
            return self.run(*args, **kwargs)
        except Retry:
            outcome = "retried"
            raise
        except (Refused, ThrottledFailure) as exc:
            outcome = "deferred"
            self.defer(exc)
        except PermanentFailure as exc:
            outcome = "archived"
            self.archive(exc, exc.category)
            raise
        except Exception as exc:
            outcome = "retried" if self._will_retry(exc) else "archived"
            self._retry_or_archive(exc)
            raise
        finally:
            self._record_outcome(outcome, time.monotonic() - started)

    def guard(self, operation: str, *, cost: int | None = None) -> AbstractContextManager[None]:
        """Wrap one provider call: ``with self.guard("messages.get"): client.get(...)``."""
        return guarded_call(self.call_scope(), operation, cost=cost, classify=self.classify)

    def classify(self, exc: BaseException) -> CallFailure | None:
        """Map a call's exception onto the safeguards' taxonomy; provider tasks extend this."""
        return default_classifier(exc)

    def call_scope(self) -> CallScope:
        """The store, provider and circuit of the current job."""
        store_id = self.store_id()
        if store_id is None:
            raise ValidationFailure(f"{self.name} needs a {self.store_arg!r} argument")
        provider = store_provider(store_id)
        return CallScope(store_id, provider, self.circuit_name or provider.value)

    def store_id(self) -> uuid.UUID | None:
        """The store this job works for, read from its arguments."""
        request = self.request
        value = (request.kwargs or {}).get(self.store_arg)
        if value is None and request.args:
            value = request.args[0]
        try:
            return uuid.UUID(str(value)) if value is not None else None
        except ValueError as exc:
            raise ValidationFailure(f"{self.store_arg}={value!r} is not a UUID") from exc

    def defer(self, reason: Refused | ThrottledFailure) -> None:
        """Re-publish this job after the refusal's retry-after, without spending a retry."""
        request = self.request
        if request.called_directly:
            raise reason
        now = time.time()
        headers = dict(request.headers or {})
        since = float(headers.get(DEFERRED_SINCE) or now)
        if now - since >= get_settings().defer_horizon_s:
            self.archive(reason, too_long(reason))
            raise reason
        deferrals = int(headers.get(DEFERRALS) or 0)
        countdown = self._deferral_countdown(reason, deferrals)
        headers.update({DEFERRED_SINCE: since, DEFERRALS: deferrals + 1})
        # The hook runs first: once published, the job may start again at once.
        with handing_back("deferral", request.id):
            self.on_deferred(reason, countdown)
            self.signature_from_request(
                request, countdown=countdown, retries=request.retries, headers=headers
            ).apply_async()
        raise Retry(f"deferred {countdown:.2f}s: {reason}", reason, when=countdown)

    def archive(self, exc: BaseException, category: FailureCategory) -> uuid.UUID:
        """Write the complete job to the archive; if that fails, hand the message back."""
        request = self.request
        try:
            entry_id = move_to_dead_letter_queue(
                request.id,
                self.name,
                f"{type(exc).__name__}: {exc}",
                request.retries,
                self.job_data(),
                failure_category=category,
                error_context=error_context_from(
                    exc,
                    worker=request.hostname,
                    started_at=getattr(request, "attempt_started_at", None),
                ),
                store_id=self._store_id_or_none(),
            )
        except Exception as db_exc:  # not archived means not acknowledged: handed back
            with handing_back("archiving", request.id):
                raise db_exc
        # Archived but not yet closed: the redelivery finds the entry and closes the job.
        with handing_back("closing the archived job", request.id):
            self.on_archived(entry_id, category, exc)
        if (business_id := self._business_or_none()) is not None:
            announce(
                business_id,
                "dead_letter.added",
                {"entry_id": str(entry_id), "category": category.value, "job_type": self.name},
            )
        return entry_id

    def job_data(self) -> dict[str, Any]:
        """Everything replay needs to publish this job again exactly."""
        request = self.request
        delivery = request.delivery_info or {}
        headers = {k: v for k, v in (request.headers or {}).items() if k not in _DEFERRAL_HEADERS}
        return {
            "task": self.name,
            "args": list(request.args or ()),
            "kwargs": dict(request.kwargs or {}),
            "headers": headers,
            "options": {
                "queue": delivery.get("routing_key") or self.queue,
                "priority": delivery.get("priority"),
            },
            "retries": request.retries,
            "root_id": request.root_id,
            "parent_id": request.parent_id,
        }

    def stale_result(self) -> dict[str, Any] | None:
        """Hook: the result of a message that must not run (its job ended or moved on)."""
        return None

    def on_deferred(self, reason: Refused | ThrottledFailure, countdown_s: float) -> None:
        """Hook: the job is about to be re-published ``countdown_s`` seconds out (no retry)."""

    def on_retrying(self, exc: Exception, countdown_s: float) -> None:
        """Hook: the job is about to be retried ``countdown_s`` seconds out."""

    def on_archived(
        self, entry_id: uuid.UUID, category: FailureCategory, exc: BaseException
    ) -> None:
        """Hook: the job is now archive entry ``entry_id``."""

    def _may_retry(self) -> bool:
        return bool(self.request.retries < self.max_retries)

    def _will_retry(self, exc: Exception) -> bool:
        # A failure the classifier calls permanent (a DataError: the same data fails again)
        # goes to the archive at once instead of spending retries on it.
        return self._may_retry() and not isinstance(self.classify(exc), PermanentFailure)

    def _retry_or_archive(self, exc: Exception) -> None:
        if self.request.called_directly:
            return
        if self._will_retry(exc):
            countdown = self._retry_countdown(exc)
            with handing_back("retry", self.request.id):
                self.on_retrying(exc, countdown)
                raise self.retry(exc=exc, countdown=countdown)
        failure = self.classify(exc)
        self.archive(exc, failure.category if failure else FailureCategory.UNKNOWN)

    def _retry_countdown(self, exc: Exception) -> float:
        """Seconds before the retry of a failure: max(full-jitter backoff, its Retry-After).

        A failure that carries the provider's Retry-After (a 503 or 504 with one) stays a
        failure: the breaker counted it and it spends a retry, because the provider did fail;
        a 429 or quota 403 is a throttle instead and is deferred without spending one. Either
        way the wait is at least the provider's (Microsoft asks clients to back off on 503 as
        on 429; Google's Gmail error guide asks for back-off on 429, 500, 503 and quota 403),
        and the guard has throttled the store's limiter for it, so other jobs wait too. The
        cap at ``max_backoff_s`` keeps the countdown inside the visibility timeout; a longer
        Retry-After is carried past it by the limiter, which defers the early retry.
        """
        failure = exc if isinstance(exc, CallFailure) else self.classify(exc)
        hint = failure.retry_after_s if failure is not None else None
        max_backoff_s = float(get_settings().max_backoff_s)
        backoff = compute_backoff(
            self.request.retries, base_s=self.retry_backoff_base_s, max_backoff_s=max_backoff_s
        )
        return min(max(backoff, hint or 0.0), max_backoff_s)

    def _deferral_countdown(self, reason: Refused | ThrottledFailure, deferrals: int) -> float:
        max_backoff_s = float(get_settings().max_backoff_s)
        hinted = reason.retry_after_s
        if isinstance(reason, ThrottledFailure):
            # The provider throttled us: max(its Retry-After, a back-off that grows with each
            # throttle in a row), so a 429 with "Retry-After: 0" is not answered at once again.
            backoff = throttle_backoff(deferrals, max_backoff_s=max_backoff_s)
            return min(max(hinted or 0.0, backoff), max_backoff_s)
        if hinted is None:  # a refusal without a retry-after: back off on our own
            hinted = compute_backoff(deferrals, max_backoff_s=max_backoff_s)
        # A small floor keeps a zero retry-after from spinning the job through the broker.
        return min(max(hinted, 0.05), max_backoff_s)

    def _store_id_or_none(self) -> uuid.UUID | None:
        with suppress(ValidationFailure):
            return self.store_id()
        return None

    def _business_or_none(self) -> uuid.UUID | None:
        try:
            store_id = self.store_id()
            return None if store_id is None else store_business(store_id)
        except ValidationFailure:  # no store, or one deleted meanwhile: nobody to tell
            return None

    def _record_outcome(self, outcome: str, duration_s: float) -> None:
        record_metric(
            MetricType.PERFORMANCE,
            "task_duration_ms",
            duration_s * 1000.0,
            unit="ms",
            tags={"task": self.name, "outcome": outcome},
            store_id=self._store_id_or_none(),
        )
        count_task(self.name, outcome, duration_s)


@lru_cache(maxsize=4096)
def _store_identity(store_id: uuid.UUID) -> tuple[Provider, uuid.UUID]:
    # A store's provider and business never change: safe to cache in process.
    with service_session() as session:
        store = session.get(Store, store_id)
        if store is None:
            raise ValidationFailure(f"store {store_id} does not exist")
        return store.provider, store.business_id


def store_provider(store_id: uuid.UUID) -> Provider:
    """A store's provider."""
    return _store_identity(store_id)[0]


def store_business(store_id: uuid.UUID) -> uuid.UUID:
    """The business a store belongs to."""
    return _store_identity(store_id)[1]
