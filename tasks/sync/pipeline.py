"""Mailbox sync: chunked, checkpointed, idempotent, one run per store, bursts coalesced.

Each provider page is applied in one transaction together with the job's checkpoint (and, on
the last page, the store's new cursor), so a killed worker resumes from the last committed page
and a redelivered page changes nothing. A run hands its worker back after a budget of pages or
seconds by enqueueing its own continuation. ``request_sync`` is the one-liner for application
code: it folds a request into a queued or running sync, which then runs exactly one follow-up.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, update

from models import FailureCategory, Store, StoreStatus, SyncJob, SyncJobStatus
from providers.base import ChangesPage, FullPage, MailProvider
from safeguards.errors import CallFailure, CursorLost, Refused, ThrottledFailure, ValidationFailure
from safeguards.storable import storable_text
from syncguard.db import service_session
from syncguard.settings import get_settings
from tasks import app
from tasks.base import SafeguardedTask
from tasks.events import announce
from tasks.guard import default_classifier
from tasks.provider_clients import open_client, to_call_failure
from tasks.renewal import ensure_healthy_subscription
from tasks.replay import REPLAY_OF
from tasks.sync.ending import end_job, record_job
from tasks.sync.jobs import (
    archived_entry,
    count_deferral,
    is_stale_message,
    job_for_task,
    set_status,
    start_job,
    starts_in,
)
from tasks.sync.lease import Hold, drop, hand_over, held_by_ended_job, hold, keep, wait_out_hold
from tasks.sync.mailbox_copy import (
    database_now,
    delete_messages,
    relabel_messages,
    storable_cursor,
    sweep_unseen,
    upsert_messages,
)
from tasks.sync.requests import sync_flight
from tasks.sync.set_aside import announce_set_aside, set_aside


class Superseded(Exception):
    """This message's job was re-published under another message (tasks/recovery.py), or
    another run holds the store's lease: the run ends quietly, its page rolled back, and the
    job is left to the message that owns it or, failing that, to the recovery sweep.
    """


class SyncTask(SafeguardedTask):
    """SafeguardedTask that speaks the providers' errors and keeps ``sync_jobs`` current."""

    max_retries = 5

    def classify(self, exc: BaseException) -> CallFailure | None:
        """Provider errors first, then the generic rules."""
        return to_call_failure(exc) or default_classifier(exc)

    def stale_result(self) -> dict[str, Any] | None:
        """A result for a message whose job ended or went to another message (see jobs).

        A message archived whose job was not yet closed (the database failed in between, and
        the message was handed back) closes it now, and is stale too.
        """
        request = self.request
        job_id = (request.kwargs or {}).get("job_id")
        if is_stale_message(job_id, request.id, replay=self.is_replay()):
            return {"job_id": job_id, "stale": True}
        if self.is_replay() or (entry := archived_entry(request.id)) is None:
            return None
        self.on_archived(entry.id, entry.failure_category, RuntimeError(entry.failure_reason))
        return {"job_id": job_id, "stale": True, "archived": str(entry.id)}

    def on_deferred(self, reason: Refused | ThrottledFailure, countdown_s: float) -> None:
        """Show the wait on the job and when it starts again; its store stays pending so long."""
        if (job_id := job_for_task(self.request.id)) is not None:
            count_deferral(job_id, f"deferred {countdown_s:.1f}s: {reason}", countdown_s)
            self._requeue(job_id, countdown_s)

    def on_retrying(self, exc: Exception, countdown_s: float) -> None:
        """Show the failed attempt on the job; the lease stays with it until it comes back."""
        if (job_id := job_for_task(self.request.id)) is not None:
            eta = starts_in(countdown_s)
            set_status(job_id, SyncJobStatus.QUEUED, error_message=str(exc)[:2000], eta=eta)
            self._requeue(job_id, countdown_s)

    def _requeue(self, job_id: uuid.UUID, countdown_s: float) -> None:
        if (store_id := self.store_id()) is not None:
            sync_flight().requeue(str(store_id), str(job_id), countdown_s)

    def apply_async(
        self, args: Any = None, kwargs: Any = None, task_id: str | None = None, **options: Any
    ) -> Any:
        """Publish; a sync without a job id (``sync_store.delay(store_id)``) gets its job row
        first, committed, and its message carries the job id (the ledger rule: every accepted
        job is recorded before its message exists, so the recovery sweep can re-publish it).

        Raises ValidationFailure for an unknown store and ``StoreNotSyncable`` for an inactive
        one, as ``request_sync`` does; nothing is published then.
        """
        kwargs = dict(kwargs or {})
        if kwargs.get("job_id") is None:
            store = args[0] if args else kwargs.get(self.store_arg)
            job_id, task_id = record_job(store, task_id)
            kwargs["job_id"] = str(job_id)
        return super().apply_async(args, kwargs, task_id=task_id, **options)

    def is_replay(self) -> bool:
        """True when this message is a replay of a dead-letter entry."""
        return REPLAY_OF in (self.request.headers or {})

    def on_archived(
        self, entry_id: uuid.UUID, category: FailureCategory, exc: BaseException
    ) -> None:
        """Close the job, mark a store whose grant is gone, and free the store for others."""
        store_id = self.store_id()
        if store_id is None:
            return
        if category is FailureCategory.AUTHENTICATION:
            _mark_store(store_id, StoreStatus.NEEDS_REAUTH, str(exc))
        if (job_id := job_for_task(self.request.id)) is not None:
            message = f"archived as {entry_id}"
            end_job(store_id, job_id, SyncJobStatus.ARCHIVED, error_message=message)


@app.task(bind=True, base=SyncTask, name="tasks.sync.sync_store")  # type: ignore[untyped-decorator]
def sync_store(self: SyncTask, store_id: str, job_id: str | None = None) -> dict[str, Any]:
    """Sync one store: a bounded number of pages now, the rest in a continuation."""
    store_uuid = self.store_id()
    assert store_uuid is not None  # call_scope() in the preflight already validated it
    job = start_job(store_uuid, job_id, self.request.id, replay=self.is_replay())
    if job is None:  # a redelivered or old message of a job that has ended: acknowledge it
        return {"job_id": job_id, "stale": True}
    # The seed's pre-processing check: an expired or unhealthy subscription gets renewed.
    ensure_healthy_subscription(store_uuid)
    # A job with a checkpoint continues a run under way: requests folded into it stay pending.
    held = hold(store_uuid, job.id, self.request.id, fresh=not job.checkpoint)
    if held is Hold.STALE:  # the sweep handed the job to another message meanwhile
        return {"job_id": str(job.id), "stale": True, "found_at": "lease"}
    if held is Hold.BUSY:
        if held_by_ended_job(store_uuid):
            return wait_out_hold(store_uuid, job.id)
        set_status(job.id, SyncJobStatus.SUCCEEDED, error_message="coalesced into a running sync")
        return {"job_id": str(job.id), "coalesced": True}
    store = _load_store(store_uuid)
    if store.status is not StoreStatus.ACTIVE:
        end_job(store_uuid, job.id, SyncJobStatus.FAILED, error_message=f"store is {store.status}")
        return {"job_id": str(job.id), "skipped": str(store.status)}
    client = open_client(store, lambda operation, cost: self.guard(operation, cost=cost))
    try:
        progress = SyncRun(client, store, job, self.request.id).run()
    except Superseded:  # the sweep handed the job to another message: that one runs it
        drop(store_uuid, job.id, self.request.id)
        return {"job_id": str(job.id), "superseded": True}
    finally:
        client.close()
    if not progress.done:
        # Queued first, under the continuation's own task id: it may start at once, and only
        # it may run the job from now on.
        next_id = str(uuid.uuid4())
        set_status(job.id, SyncJobStatus.QUEUED, celery_task_id=next_id, eta=starts_in(0))
        hand_over(store_uuid, job.id, self.request.id, next_id)
        sync_store.apply_async(args=[store_id], kwargs={"job_id": str(job.id)}, task_id=next_id)
        return {"job_id": str(job.id), "continued": True, "pages": progress.pages}
    # The job ends together with its follow-up's row (tasks/sync/ending.py).
    end_job(store_uuid, job.id, SyncJobStatus.SUCCEEDED, error_message=None)
    announce(
        store.business_id,
        "sync.completed",
        {"store_id": store_id, "job_id": str(job.id), "cursor_advanced": True},
    )
    return {"job_id": str(job.id), "pages": progress.pages, "retries": self.request.retries}


@dataclass
class SyncRun:
    """One budgeted run over a store's pages, committing each page with its checkpoint."""

    client: MailProvider
    store: Store
    job: SyncJob
    #: The message running the job: a page commits only while the job still names it.
    task_id: str
    pages: int = 0
    done: bool = False
    checkpoint: dict[str, Any] = field(default_factory=dict)

    def run(self) -> SyncRun:
        """Apply pages until the listing ends or the run's budget is spent."""
        settings = get_settings()
        deadline = time.monotonic() + settings.sync_max_seconds_per_run
        self.checkpoint = dict(self.job.checkpoint or {})
        if "mode" not in self.checkpoint:
            self._begin("incremental" if self.store.sync_cursor else "full")
        while not self.done:
            if self.pages >= settings.sync_max_pages_per_run or time.monotonic() > deadline:
                break
            self._step()
        return self

    def _begin(self, mode: str) -> None:
        self.checkpoint = {"mode": mode, "page_token": None}
        if mode == "full":
            with service_session() as session:
                # Rows the full listing does not touch after this instant were deleted upstream.
                self.checkpoint["full_since"] = database_now(session).isoformat()

    def _step(self) -> None:
        token = self.checkpoint.get("page_token")
        if self.checkpoint["mode"] == "full":
            self._apply(self.client.list_page(token))
            return
        try:
            self._apply(self.client.changes_page(self.store.sync_cursor or "", token))
        except CursorLost:
            # The provider forgot our cursor: list everything again, then sweep what is gone.
            self._begin("full")
            self.checkpoint["resync_reason"] = "cursor_lost"

    def _apply(self, page: FullPage | ChangesPage) -> None:
        store_id = self.store.id
        cursor = page.cursor
        with service_session() as session:
            if isinstance(page, FullPage):
                upserted, deleted = upsert_messages(session, store_id, page.messages), 0
                if cursor is not None:
                    since = datetime.fromisoformat(self.checkpoint["full_since"])
                    deleted = sweep_unseen(session, store_id, since)
            else:
                upserted = upsert_messages(session, store_id, page.upserts)
                deleted = delete_messages(session, store_id, page.deleted_ids)
                relabel_messages(session, store_id, page.label_changes)
            # Refused and unreadable messages are archived with this page, so the cursor still
            # moves past them.
            set_aside_ids = set_aside(
                session, store_id, self.job.id, upserted.refused, page.unreadable
            )
            self.checkpoint["page_token"] = storable_cursor(store_id, page.next_page_token)
            cursor = storable_cursor(store_id, cursor)
            self._save(session, upserted.stored, deleted, cursor)
        announce_set_aside(self.store.business_id, set_aside_ids)  # committed: now tell
        self.pages += 1
        self.done = cursor is not None
        # A lapsed lease (Redis restarted empty, or a page outlasted it) is taken again unless
        # another run holds it now; then this run yields, and the sweep recovers the job later.
        if not keep(store_id, self.job.id, self.task_id):
            raise Superseded(f"another run holds the sync lease of store {store_id}")

    def _save(self, session: Any, upserted: int, deleted: int, cursor: str | None) -> None:
        job_values: dict[str, Any] = {
            "checkpoint": self.checkpoint if cursor is None else {},
            "pages_processed": SyncJob.pages_processed + 1,
            "messages_upserted": SyncJob.messages_upserted + upserted,
            "messages_deleted": SyncJob.messages_deleted + deleted,
        }
        if self.checkpoint["mode"] == "full":
            job_values["kind"] = "full"
        fenced = update(SyncJob).where(SyncJob.id == self.job.id)
        fenced = fenced.where(SyncJob.celery_task_id == self.task_id)
        if session.execute(fenced.values(**job_values)).rowcount != 1:
            raise Superseded(f"sync job {self.job.id} now belongs to another message")
        if cursor is not None:
            self.store.sync_cursor = cursor
            session.execute(
                update(Store)
                .where(Store.id == self.store.id)
                .values(sync_cursor=cursor, cursor_updated_at=func.now(), last_synced_at=func.now())
            )


def _load_store(store_id: uuid.UUID) -> Store:
    with service_session() as session:
        store = session.get(Store, store_id)
        if store is None:
            raise ValidationFailure(f"store {store_id} does not exist")
        return store


def _mark_store(store_id: uuid.UUID, status: StoreStatus, reason: str) -> None:
    with service_session() as session:
        session.execute(
            update(Store)
            .where(Store.id == store_id)
            .values(status=status, status_reason=storable_text(reason[:2000]))
        )


__all__ = ["SyncTask", "sync_store"]
