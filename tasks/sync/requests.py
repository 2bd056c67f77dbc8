"""Requesting syncs: the one-liner for application code, with per-store coalescing."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from models import SyncTrigger
from safeguards.single_flight import SingleFlight
from syncguard.db import service_session
from syncguard.settings import get_settings
from tasks import app
from tasks.sync.jobs import create_job, has_ended

#: The task every request ends in.
SYNC_TASK = "tasks.sync.sync_store"


def sync_flight() -> SingleFlight:
    """The per-store single flight of syncs (lease and queue bound from settings).

    The pending marker, and with it the dirty flag of requests folded into its job, lives past
    the job's expected start for the queue bound plus one sweep period plus one lease of slack:
    the recovery sweep re-publishes (and re-arms) a job only at the first sweep after its queue
    bound, so a marker that lived for the bound alone lapsed before that sweep whenever a job
    waited in a backlog, and the requests folded into it were lost with it. The dirty flag lives
    for as long as its job may (each recovery is one such period, and the sweep archives a job
    past ``sync_max_recoveries``): a sweep running late on a loaded machine can still let the
    marker lapse, but the folded requests then wait for the job's release all the same.
    """
    settings = get_settings()
    live_s = settings.sync_queue_bound_s + settings.sync_recovery_sweep_s + settings.sync_lease_s
    return SingleFlight(
        "sync",
        lease_s=settings.sync_lease_s,
        pending_ttl_s=live_s,
        dirty_ttl_s=live_s * (settings.sync_max_recoveries + 2),
    )


@dataclass(frozen=True)
class PlannedSync:
    """A sync job row written in a caller's transaction, its message not yet published.

    Once that transaction has committed, ``publish()``; should it roll back, ``cancel()`` (the
    pending marker names the job, and would fold later requests into a job that never exists).
    """

    store_id: uuid.UUID
    job_id: uuid.UUID
    task_id: str

    def publish(self, *, lean: bool = False) -> None:
        """Send the job's message (``lean``: see ``publish``); on failure the pending marker is
        withdrawn and it raises."""
        try:
            publish(self.store_id, self.job_id, self.task_id, lean=lean)
        except BaseException:
            self.cancel()  # the job stays queued: the recovery sweep publishes it later
            raise

    def cancel(self) -> None:
        """Withdraw the pending marker this plan set (nothing to do for a folded request)."""
        sync_flight().cancel(str(self.store_id), str(self.job_id))


def request_sync(
    store_id: uuid.UUID | str, trigger: SyncTrigger = SyncTrigger.MANUAL
) -> uuid.UUID | None:
    """Enqueue a sync of the store, or fold the request into the pending one (returns None).

    A folded request is never lost: the pending sync, or exactly one follow-up after it, starts
    reading the mailbox after the request. The ledger is the truth: a pending marker whose job
    has already ended (its worker died before clearing it) does not fold anything.

    Raises ``tasks.sync.jobs.StoreNotSyncable`` for a store that is not active (paused, revoked)
    and ``ValidationFailure`` for one that does not exist; nothing is enqueued then.
    """
    planned: PlannedSync | None = None
    try:
        with service_session() as session:
            planned = plan_sync(session, store_id, trigger)
    except BaseException:
        if planned is not None:  # the commit failed: the job the marker names does not exist
            planned.cancel()
        raise
    if planned is None:
        return None
    planned.publish()
    return planned.job_id


def plan_sync(
    session: Session, store_id: uuid.UUID | str, trigger: SyncTrigger
) -> PlannedSync | None:
    """``request_sync`` inside the caller's transaction: None when folded, else the plan to
    publish once the transaction commits (the ledger rule: the row exists before its message).

    Raises like ``request_sync``, with the pending marker already withdrawn.
    """
    planned = reserve_sync(session, store_id)
    if planned is None:
        return None
    try:
        create_job(
            planned.store_id, trigger, planned.job_id, celery_task_id=planned.task_id,
            session=session,
        )  # fmt: skip
    except BaseException:
        planned.cancel()  # otherwise later requests would fold into nothing
        raise
    return planned


def reserve_sync(session: Session | None, store_id: uuid.UUID | str) -> PlannedSync | None:
    """``plan_sync`` without the row: the pending marker set (None when folded) and the job and
    task ids chosen. The caller writes the job row (``create_job`` or an equivalent statement)
    in a transaction that must commit before ``publish()``, and calls ``cancel()`` should it
    not commit. ``session`` is only read (whether a marker's job has ended); None: a new one.
    """
    store_uuid = uuid.UUID(str(store_id))
    store_key, job_id = str(store_uuid), uuid.uuid4()
    flight = sync_flight()
    if not flight.request(store_key, str(job_id)):
        holder = flight.holder(store_key)
        if holder is not None and not has_ended(holder, session):
            return None
        if not flight.take_over(store_key, holder, str(job_id)):
            return None  # another request replaced the stale marker first: folded into its job
    # The message's task id is chosen now and written with the row: no update after publishing.
    return PlannedSync(store_uuid, job_id, str(uuid.uuid4()))


class _NoSentEvent:
    """An event dispatcher that publishes nothing: no ``task-sent`` event for a lean message."""

    def publish(self, *args: object, **kwargs: object) -> None:
        """Publish nothing."""


_NO_SENT_EVENT = _NoSentEvent()


def publish(store_id: uuid.UUID, job_id: uuid.UUID, task_id: str, *, lean: bool = False) -> None:
    """Send the message that runs job ``job_id`` as Celery task ``task_id``.

    ``lean`` (the webhook receivers' hot path) leaves out two broker round trips per message
    that nothing on that path needs: the ``task-sent`` event (the job row, committed before the
    message, records it as queued; Flower shows the task from the worker's ``task-received``
    on) and the result: nothing reads a sync's Celery result (its job row is its record), and
    with one the Redis backend SUBSCRIBEs to the task's result channel at publishing and
    UNSUBSCRIBEs when the AsyncResult is dropped. ``tasks.sync.reconcile`` publishes the same
    way. The event and the subscription were ~9 % of the Graph receiver's CPU samples (py-spy
    under bench/receiver.py's load).
    """
    options: dict[str, Any] = (
        {"event_dispatcher": _NO_SENT_EVENT, "ignore_result": True} if lean else {}
    )
    app.send_task(
        SYNC_TASK,
        args=[str(store_id)],
        kwargs={"job_id": str(job_id)},
        task_id=task_id,
        **options,
    )
