"""The store's sync lease, held by one message at a time: the one the ledger names.

A job runs as a chain of messages (its first, retries and deferrals under the same task id,
continuations and recovered copies under new ones), and the ledger's ``celery_task_id`` names the
one allowed to run it. The lease therefore names the message too (``<job id>/<task id>``), not
only the job: a stale message, one the recovery sweep has handed the job away from while it
stalled, could otherwise take the lease under the job's id after the new message, clear the
store's dirty flag (dropping a request folded into the running job, so no follow-up ran) or keep
the lease after the job ended. Holding is two steps: ``claim`` the lease (clearing nothing), ask
the ledger whether this message owns the job (``owns``, while holding the lease: the sweep
never takes a running job whose lease is alive), and only then ``begin`` a fresh run (requests
so far are covered) or ``take`` the lease from a stale sibling; a stale message ``drop``s it.
"""

from __future__ import annotations

import enum
import uuid
from typing import Any

from models import SyncJobStatus
from safeguards.single_flight import Claim
from syncguard.settings import get_settings
from tasks import app
from tasks.sync.jobs import has_ended, owns, set_status, starts_in
from tasks.sync.requests import SYNC_TASK, sync_flight


class Hold(enum.Enum):
    """What ``hold`` found."""

    #: This message holds the lease and may run the job.
    HELD = "held"
    #: Another job's run holds it (the store is marked dirty: that run follows up).
    BUSY = "busy"
    #: The ledger names another message for the job: this one must not run (nothing held).
    STALE = "stale"


def lease_token(job_id: uuid.UUID, task_id: str) -> str:
    """The lease owner of message ``task_id`` running job ``job_id``."""
    return f"{job_id}/{task_id}"


def hold(store_id: uuid.UUID, job_id: uuid.UUID, task_id: str, *, fresh: bool) -> Hold:
    """Take the store's lease for this message of the job (see the module docstring).

    ``fresh``: the job reads from its start (no checkpoint), so it covers every request folded
    so far and clears the dirty flag; a continuation keeps them pending for its follow-up.
    Raises SafeguardUnavailable (Redis) or a database error.
    """
    flight, scope, token = sync_flight(), str(store_id), lease_token(job_id, task_id)
    claim = flight.claim(scope, token)
    if claim is Claim.BUSY:
        return Hold.BUSY
    if not owns(job_id, task_id):
        if claim is Claim.HELD:
            flight.drop(scope, token)
        return Hold.STALE
    if claim is Claim.SIBLING and not flight.take(scope, token):
        claim = flight.claim(scope, token)  # another job's run took it meanwhile
        if claim is not Claim.HELD:
            return Hold.BUSY if claim is Claim.BUSY else Hold.STALE
    if fresh and not flight.begin(scope, token):
        return Hold.STALE  # stalled past the lease since the ledger said yes: left to the sweep
    return Hold.HELD


def keep(store_id: uuid.UUID, job_id: uuid.UUID, task_id: str) -> bool:
    """Renew this message's lease after a committed page (the commit, fenced on the task id,
    proved it still owns the job); a lapsed lease is taken again unless another run holds it.

    False then: the run yields, and the recovery sweep re-publishes the job later.
    """
    flight, scope, token = sync_flight(), str(store_id), lease_token(job_id, task_id)
    return flight.renew(scope, token) or flight.take(scope, token)


def hand_over(store_id: uuid.UUID, job_id: uuid.UUID, task_id: str, next_task_id: str) -> None:
    """The job continues as message ``next_task_id``: the lease passes to it, the job stays
    pending (requests folded into it keep waiting for its follow-up)."""
    flight, scope = sync_flight(), str(store_id)
    flight.requeue(scope, lease_token(job_id, task_id), 0.0, lease_token(job_id, next_task_id))


def drop(store_id: uuid.UUID, job_id: uuid.UUID, task_id: str) -> None:
    """Give back this message's lease, if it holds it (it turned out stale)."""
    sync_flight().drop(str(store_id), lease_token(job_id, task_id))


def held_by_ended_job(store_id: uuid.UUID) -> bool:
    """True when the lease is held under a job the ledger says has ended.

    That hold is a message whose process died holding it after its job ended elsewhere (a
    stale message gives its lease back, see ``hold``): it never releases, so a run folded into
    it would never get its follow-up. A turned-away ``claim`` names the holder's job as pending.
    """
    holder = sync_flight().holder(str(store_id))
    return holder is not None and has_ended(holder)


def wait_out_hold(store_id: uuid.UUID, job_id: uuid.UUID) -> dict[str, Any]:
    """Re-publish the job to start once the stray hold's lease has lapsed (at most a lease)."""
    delay_s, next_id = get_settings().sync_lease_s, str(uuid.uuid4())
    set_status(job_id, SyncJobStatus.QUEUED, celery_task_id=next_id, eta=starts_in(delay_s))
    sync_flight().requeue(str(store_id), str(job_id), delay_s)
    kwargs = {"job_id": str(job_id)}
    app.send_task(
        SYNC_TASK, args=[str(store_id)], kwargs=kwargs, task_id=next_id, countdown=delay_s
    )
    return {"job_id": str(job_id), "waiting_for_lease": True}
