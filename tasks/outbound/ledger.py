"""The outbound ledger: every outbound message has its row before its first publication.

``record`` decides the endpoints and writes one ``outbound_messages`` row each in a single
``INSERT ... SELECT`` (the decision and its record are one statement), committed before any
``deliver_event`` is published. Each row names the one Celery task allowed to run it
(``celery_task_id``, the fence) and when that task is expected to start (``eta``). A run
``claim``s its row first (a stale message, one the row no longer names, is a no-op), moves it on
with ``reschedule`` before each re-publication (a retry, a wait leg), and ``finish``es it in one
terminal state: delivered, archived (the dead-letter archive holds the entry) or dropped (the
endpoint was disabled or deleted).

Beat's sweep (``recover_outbound_messages``, every ``outbound_recovery_sweep_s``) re-publishes
each message still queued or delivering more than ``outbound_queue_bound_s`` past its ``eta``:
the broker lost it, the publication failed after the row committed, or the worker died holding
it. Re-publication is a compare-and-set on the row as the sweep read it, under a new task id, so
two sweeps never both win and the old message, should it still arrive, is stale. A message the
sweep would re-publish more than ``outbound_max_recoveries`` times is archived as
``recovery_exhausted``. Recovery bound, once the fault clears: the message's countdown +
``outbound_queue_bound_s`` + ``outbound_recovery_sweep_s``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    CursorResult,
    Text,
    and_,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy import (
    cast as sql_cast,
)

from models import FailureCategory, OutboundMessage, OutboundStatus, WebhookEndpoint
from models.outbound import TERMINAL
from safeguards.dead_letter.archive import move_to_dead_letter_queue
from syncguard.db import service_session
from syncguard.settings import get_settings
from tasks import app
from tasks.outbound.endpoints import subscribed
from tasks.queues import WEBHOOKS

log = logging.getLogger(__name__)

#: The delivery task's name (the sweep publishes it by name: delivery imports this module).
DELIVER_TASK = "tasks.outbound.deliver_event"
#: The sweep's task name (Beat's schedule names it).
SWEEP_TASK = "tasks.outbound.ledger.recover_outbound_messages"
_WAITING = (OutboundStatus.QUEUED.value, OutboundStatus.DELIVERING.value)


@dataclass(frozen=True)
class Queued:
    """A recorded message, ready to publish under ``task_id``."""

    message_id: str
    endpoint_id: uuid.UUID
    task_id: str


def record(business_id: uuid.UUID, event_type: str, payload: dict[str, Any]) -> list[Queued]:
    """Write one queued row per enabled endpoint of the business taking ``event_type``.

    Committed when this returns; the caller publishes afterwards. Raises SQLAlchemyError.
    """
    ids = select(
        (literal("msg_") + func.replace(sql_cast(func.gen_random_uuid(), Text), "-", "")).label(
            "id"
        ),
        WebhookEndpoint.business_id,
        WebhookEndpoint.id.label("endpoint_id"),
        literal(event_type).label("event_type"),
        literal(payload, OutboundMessage.payload.type).label("payload"),
        sql_cast(func.gen_random_uuid(), Text).label("celery_task_id"),
        func.now().label("eta"),
    ).where(subscribed(business_id, event_type))
    columns = ["id", "business_id", "endpoint_id", "event_type", "payload", "celery_task_id"]
    stmt = (
        insert(OutboundMessage)
        .from_select([*columns, "eta"], ids)
        .returning(OutboundMessage.id, OutboundMessage.endpoint_id, OutboundMessage.celery_task_id)
    )
    with service_session() as session:
        return [Queued(m, e, cast(str, t)) for m, e, t in session.execute(stmt).all()]


def claim(message_id: str, task_id: str | None) -> bool:
    """Mark the message delivering for this run; False when the run is stale (do nothing).

    A row in the archive is claimed by any task (a replay of its entry); a message without a
    row (published before the ledger existed) runs unfenced.
    """
    mine = and_(OutboundMessage.status.in_(_WAITING), OutboundMessage.celery_task_id == task_id)
    stmt = (
        update(OutboundMessage)
        .where(
            OutboundMessage.id == message_id,
            or_(mine, OutboundMessage.status == OutboundStatus.ARCHIVED.value),
        )
        .values(status=OutboundStatus.DELIVERING.value, celery_task_id=task_id, eta=func.now())
    )
    with service_session() as session:
        if cast(CursorResult[Any], session.execute(stmt)).rowcount == 1:
            return True
        exists = session.scalar(select(OutboundMessage.id).where(OutboundMessage.id == message_id))
    return exists is None


def reschedule(message_id: str, task_id: str | None, attempt: int, eta: datetime) -> str:
    """Name the next message of this delivery before it is published; returns its task id."""
    next_id = str(uuid.uuid4())
    stmt = (
        update(OutboundMessage)
        .where(OutboundMessage.id == message_id, OutboundMessage.celery_task_id == task_id)
        .values(
            status=OutboundStatus.QUEUED.value, celery_task_id=next_id, attempt=attempt, eta=eta
        )
    )
    with service_session() as session:
        session.execute(stmt)
    return next_id


def finish(message_id: str, task_id: str | None, status: OutboundStatus) -> None:
    """Move the message to a terminal ``status``, if this run still holds it."""
    stmt = (
        update(OutboundMessage)
        .where(
            OutboundMessage.id == message_id,
            OutboundMessage.celery_task_id == task_id,
            OutboundMessage.status.not_in([s.value for s in TERMINAL]),
        )
        .values(status=status.value)
    )
    with service_session() as session:
        session.execute(stmt)


@dataclass(frozen=True)
class Overdue:
    """A non-terminal message as the sweep read it; the compare-and-set checks it is unchanged."""

    id: str
    business_id: uuid.UUID
    endpoint_id: uuid.UUID
    event_type: str
    payload: dict[str, Any]
    status: str
    attempt: int
    recoveries: int
    celery_task_id: str | None
    updated_at: datetime


def overdue_messages(business_ids: Collection[uuid.UUID] | None = None) -> list[Overdue]:
    """Queued or delivering messages quiet for longer than ``outbound_queue_bound_s``.

    ``business_ids`` limits the sweep to some businesses (tests sweep only their own rows).
    """
    settings = get_settings()
    bound = func.make_interval(0, 0, 0, 0, 0, 0, settings.outbound_queue_bound_s)
    stmt = (
        select(
            OutboundMessage.id,
            OutboundMessage.business_id,
            OutboundMessage.endpoint_id,
            OutboundMessage.event_type,
            OutboundMessage.payload,
            OutboundMessage.status,
            OutboundMessage.attempt,
            OutboundMessage.recoveries,
            OutboundMessage.celery_task_id,
            OutboundMessage.updated_at,
        )
        .where(
            OutboundMessage.status.in_(_WAITING),
            func.coalesce(OutboundMessage.eta, OutboundMessage.updated_at) < func.now() - bound,
        )
        .order_by(OutboundMessage.eta)
        .limit(settings.sync_recovery_batch)
    )
    if business_ids is not None:
        stmt = stmt.where(OutboundMessage.business_id.in_(list(business_ids)))
    with service_session() as session:
        return [Overdue(**row._asdict()) for row in session.execute(stmt).all()]


@app.task(name=SWEEP_TASK)  # type: ignore[untyped-decorator]
def recover_outbound_messages(
    business_ids: Collection[uuid.UUID] | None = None,
) -> dict[str, int]:
    """One sweep: counts of messages ``recovered`` (re-published) and ``exhausted`` (archived)."""
    counts = {"recovered": 0, "exhausted": 0}
    for message in overdue_messages(business_ids):
        outcome = recover(message)
        if outcome is not None:
            counts[outcome] += 1
    if any(counts.values()):
        log.warning("outbound recovery sweep: %s", counts)
    return counts


def recover(message: Overdue) -> str | None:
    """Re-publish or archive one overdue message; None when another sweep or a run won."""
    task_id = str(uuid.uuid4())
    stmt = (
        update(OutboundMessage)
        .where(
            OutboundMessage.id == message.id,
            OutboundMessage.status == message.status,
            OutboundMessage.updated_at == message.updated_at,
            OutboundMessage.celery_task_id.is_not_distinct_from(message.celery_task_id),
        )
        .values(
            status=OutboundStatus.QUEUED.value,
            celery_task_id=task_id,
            recoveries=OutboundMessage.recoveries + 1,
            eta=func.now(),
        )
    )
    with service_session() as session:
        if cast(CursorResult[Any], session.execute(stmt)).rowcount != 1:
            return None
    kwargs = {
        "endpoint_id": str(message.endpoint_id),
        "message_id": message.id,
        "event_type": message.event_type,
        "payload": message.payload,
        "attempt": message.attempt,
    }
    if message.recoveries >= get_settings().outbound_max_recoveries:
        _archive_exhausted(message, task_id, kwargs)
        return "exhausted"
    try:
        app.send_task(DELIVER_TASK, kwargs=kwargs, task_id=task_id, queue=WEBHOOKS)
    except Exception:  # still queued with a fresh eta: the sweep after the bound retries
        log.exception("re-publishing outbound message %s failed", message.id)
        return None
    log.warning(
        "recovered outbound message %s (%s) as task %s", message.id, message.status, task_id
    )
    return "recovered"


def _archive_exhausted(message: Overdue, task_id: str, kwargs: dict[str, Any]) -> None:
    recoveries = message.recoveries + 1
    move_to_dead_letter_queue(
        task_id,
        DELIVER_TASK,
        f"outbound message {message.id} recovered {recoveries} times; it never finished",
        0,
        {"task": DELIVER_TASK, "args": [], "kwargs": kwargs, "options": {"queue": WEBHOOKS}},
        failure_category=FailureCategory.RECOVERY_EXHAUSTED,
        error_context={"recoveries": recoveries, "last_status": message.status},
        business_id=message.business_id,
    )
    # Should this fail, the row stays queued and the next sweep past the bound archives it.
    finish(message.id, task_id, OutboundStatus.ARCHIVED)


__all__ = ["claim", "finish", "record", "recover_outbound_messages", "reschedule"]
