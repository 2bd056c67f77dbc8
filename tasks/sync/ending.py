"""How a sync job ends, and how a job published without one gets its row: the ledger first.

A job ends (succeeded, failed, archived) in one transaction that also writes the row of its one
follow-up when requests were folded into it: the follow-up then exists exactly when the job has
ended, whatever fails next. Publishing comes after the commit; should it fail, the follow-up's
row is queued and the recovery sweep publishes it once its queue bound has passed (and requests
meanwhile fold into it). Should the transaction fail, the job has not ended: the caller's
message goes back to the broker and its next attempt ends it again. The follow-up's id is
derived from the job's (``follow_up_id``), and the single flight's ``release`` answers a repeated
call with that same follow-up, so a repeated attempt creates it once, never twice.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from models import SyncJob, SyncJobStatus, SyncTrigger
from safeguards.errors import ValidationFailure
from syncguard.db import service_session
from tasks.sync.jobs import create_job, follow_up_id, insert_job, job_for_task, set_status
from tasks.sync.requests import publish, sync_flight

log = logging.getLogger(__name__)

#: Closes the job in the caller's transaction; False when it must not end after all (a
#: compare-and-set that lost), and then nothing is written.
Closer = Callable[[Session], bool]


def end_job(
    store_id: uuid.UUID,
    job_id: uuid.UUID,
    status: SyncJobStatus,
    *,
    close: Closer | None = None,
    **values: Any,
) -> bool:
    """End job ``job_id`` in ``status`` (``values`` as ``set_status`` takes them, or ``close``)
    and release its store, creating its follow-up if requests were folded into it.

    Returns False when ``close`` declined (nothing written). Raises what PostgreSQL or Redis
    raise before the commit (the job has not ended then); a failed publication after it is only
    logged (see the module docstring).
    """
    flight, follow_up = sync_flight(), follow_up_id(job_id)
    due = flight.release(str(store_id), str(job_id), str(follow_up))
    task_id, created, paused = str(uuid.uuid4()), False, False
    with service_session() as session:
        if close is not None and not close(session):
            return False
        if close is None:
            set_status(job_id, status, session=session, **values)
        if due:
            statement = insert_job(store_id, SyncTrigger.FOLLOW_UP, follow_up, task_id)
            created = session.execute(statement).scalar() is not None
            # No row written and none there from an earlier attempt: the store is not active.
            paused = not created and session.get(SyncJob, follow_up) is None
    if paused:  # its activation syncs it; later requests must not fold into nothing
        flight.cancel(str(store_id), str(follow_up))
    if created:
        try:
            publish(store_id, follow_up, task_id)
        except Exception:  # the row is queued: the sweep publishes it after the queue bound
            log.exception("publishing follow-up %s of sync job %s failed", follow_up, job_id)
    return True


def record_job(store_id: Any, task_id: str | None) -> tuple[uuid.UUID, str]:
    """The job row for a ``sync_store`` message about to be published without a job id
    (``sync_store.delay(store_id)``): (job id, the message's task id), committed.

    A re-publication of a message that has its row (a retry or deferral of a message that came
    without one, keyed by its task id) gets that row back. Raises ValidationFailure for a
    malformed or unknown store, ``StoreNotSyncable`` for an inactive one: nothing is published.
    """
    if task_id is not None and (job_id := job_for_task(task_id)) is not None:
        return job_id, task_id
    try:
        store_uuid = uuid.UUID(str(store_id))
    except ValueError as exc:
        raise ValidationFailure(f"store_id={store_id!r} is not a UUID") from exc
    task_id = task_id or str(uuid.uuid4())
    return create_job(store_uuid, SyncTrigger.MANUAL, celery_task_id=task_id), task_id
