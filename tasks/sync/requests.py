"""Requesting syncs: the one-liner for application code, with per-store coalescing."""

from __future__ import annotations

import uuid

from sqlalchemy import update

from models import SyncJob, SyncTrigger
from safeguards.single_flight import SingleFlight
from syncguard.db import service_session
from syncguard.settings import get_settings
from tasks import app
from tasks.sync.jobs import create_job, has_ended

#: The task every request ends in.
SYNC_TASK = "tasks.sync.sync_store"


def sync_flight() -> SingleFlight:
    """The per-store single flight of syncs (lease and queue bound from settings)."""
    settings = get_settings()
    return SingleFlight(
        "sync", lease_s=settings.sync_lease_s, pending_ttl_s=settings.sync_queue_bound_s
    )


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
    store_uuid = uuid.UUID(str(store_id))
    store_key, job_id = str(store_uuid), uuid.uuid4()
    flight = sync_flight()
    if not flight.request(store_key, str(job_id)):
        holder = flight.holder(store_key)
        if holder is not None and not has_ended(holder):
            return None
        if not flight.take_over(store_key, holder, str(job_id)):
            return None  # another request replaced the stale marker first: folded into its job
    try:
        return enqueue_job(store_uuid, trigger, job_id)
    except BaseException:
        flight.cancel(store_key, str(job_id))  # otherwise later requests would fold into nothing
        raise


def enqueue_job(
    store_id: uuid.UUID, trigger: SyncTrigger, job_id: uuid.UUID | None = None
) -> uuid.UUID:
    """Create the job row, commit, then publish its message (never the other way round)."""
    job_id = create_job(store_id, trigger, job_id)
    # By name: this module must not import tasks.sync.pipeline, which imports the webhook tasks.
    result = app.send_task(SYNC_TASK, args=[str(store_id)], kwargs={"job_id": str(job_id)})
    with service_session() as session:
        session.execute(
            update(SyncJob).where(SyncJob.id == job_id).values(celery_task_id=result.id)
        )
    return job_id
