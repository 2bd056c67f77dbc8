"""Requesting syncs: the one-liner for application code, with per-store coalescing."""

from __future__ import annotations

import uuid

from sqlalchemy import update

from models import SyncJob, SyncTrigger
from safeguards.single_flight import SingleFlight
from syncguard.db import service_session
from syncguard.settings import get_settings
from tasks import app
from tasks.sync.jobs import create_job

#: The task every request ends in.
SYNC_TASK = "tasks.sync.sync_store"


def sync_flight() -> SingleFlight:
    """The per-store single flight of syncs (lease from settings)."""
    return SingleFlight("sync", lease_s=get_settings().sync_lease_s)


def request_sync(
    store_id: uuid.UUID | str, trigger: SyncTrigger = SyncTrigger.MANUAL
) -> uuid.UUID | None:
    """Enqueue a sync of the store, or fold the request into the pending one (returns None).

    Raises ``tasks.sync.jobs.StoreNotSyncable`` for a store that is not active (paused, revoked)
    and ``ValidationFailure`` for one that does not exist; nothing is enqueued then.
    """
    store_key = str(uuid.UUID(str(store_id)))
    flight = sync_flight()
    if not flight.request(store_key):
        return None
    try:
        return enqueue_job(uuid.UUID(store_key), trigger)
    except BaseException:
        flight.cancel(store_key)  # otherwise every later request would fold into nothing
        raise


def enqueue_job(store_id: uuid.UUID, trigger: SyncTrigger) -> uuid.UUID:
    """Create the job row, commit, then publish its message (never the other way round)."""
    job_id = create_job(store_id, trigger)
    # By name: this module must not import tasks.sync.pipeline, which imports the webhook tasks.
    result = app.send_task(SYNC_TASK, args=[str(store_id)], kwargs={"job_id": str(job_id)})
    with service_session() as session:
        session.execute(
            update(SyncJob).where(SyncJob.id == job_id).values(celery_task_id=result.id)
        )
    return job_id
