"""``POST /webhooks/outlook`` and ``/webhooks/outlook/lifecycle``: Microsoft Graph notifications.

Graph counts a notification as delivered on any 2xx; on any other answer it redelivers with
exponential backoff for up to 4 hours, and it throttles, then drops, notifications to an endpoint
that is slow (Microsoft Graph, "Receive change notifications through webhooks": HTTP codes and
retry logic, throttling; answer 202 Accepted, within 3 seconds, once the notification is queued).
A body may mix items of several subscriptions, so each item is judged alone and the body as a
whole is acknowledged unless we ourselves are down:

==========================================  ======  ===========================================
case                                        status  why
==========================================  ======  ===========================================
items acted on (sync requested, lifecycle   202     acknowledged: done; ``{"accepted": n,
task published)                                     "ignored": m}``
verified item that can never be processed:  202     acknowledged with the rest of the body;
unknown lifecycleEvent, store not active            logged (success = false, "ignored (…): …")
                                                    and counted, nothing enqueued
unverified item: unknown subscription,      202     clientState is Graph's only proof of origin.
clientState mismatch, no subscriptionId;            A refusal would make Graph retry for 4 hours
malformed or oversized body                         what can never match (a subscription we
                                                    deleted, an old clientState) and would tell
                                                    a forger which ids exist; so it is acked,
                                                    counted, and not logged (no log flooding)
our database, Redis or broker unreachable   503     Graph retries; the retry succeeds later
validation handshake (``validationToken``)  200     the token echoed as text/plain within 10 s
handshake with an empty or non-printable    400     a synchronous request at subscription
token                                               creation: the creation fails, nothing retries
==========================================  ======  ===========================================

Each store gets at most one sync request per body; each (task, subscription) at most one task.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from api.errors import Rejected
from api.graph_items import (
    LIFECYCLE_TYPE,
    NOTIFICATION_TYPE,
    LifecycleEvent,
    Verdict,
    judge,
    parse_items,
    subscription_ids,
)
from api.intake import (
    Delivered,
    Intake,
    Receiver,
    answer,
    publish_after_commit,
    read_intake,
)
from api.lookups import SubscriptionRef, outlook_subscriptions, subscriptions_touch
from api.outcomes import Ignored, as_ignored
from api.receipt import DeliveryRow, StoreChanged, write_receipt
from models import SyncTrigger
from safeguards.errors import ValidationFailure
from syncguard.db import service_session, statement_connection
from tasks import app as celery_app
from tasks.sync.requests import PlannedSync, plan_sync, reserve_sync

#: Celery tasks (by name: tasks/webhooks.py) that answer lifecycle events about a subscription.
LIFECYCLE_TASKS = {
    LifecycleEvent.REAUTHORIZATION_REQUIRED: "tasks.webhooks.reauthorize_subscription",
    LifecycleEvent.SUBSCRIPTION_REMOVED: "tasks.webhooks.recreate_subscription",
}
VALIDATION_TYPE = "outlook_validation"
#: Graph's recommended acknowledgement of a notification body.
ACK_STATUS = 202
# Whole-body ignores are never logged here: the sender is unverified until an item matches.
NOTIFICATIONS = Receiver("outlook", NOTIFICATION_TYPE, ACK_STATUS, log_ignored=False)
LIFECYCLE = Receiver("outlook", LIFECYCLE_TYPE, ACK_STATUS, log_ignored=False)
VALIDATION = Receiver("outlook", VALIDATION_TYPE, 200, log_ignored=False)

logger = logging.getLogger(__name__)

router = APIRouter()


@router.post("/webhooks/outlook", status_code=ACK_STATUS)
def outlook_notifications(
    request: Request, intake: Annotated[Intake, Depends(read_intake)]
) -> Response:
    """Change notifications (and the subscription's validation handshake)."""
    return _receive(request, intake, lifecycle_url=False)


@router.post("/webhooks/outlook/lifecycle", status_code=ACK_STATUS)
def outlook_lifecycle(
    request: Request, intake: Annotated[Intake, Depends(read_intake)]
) -> Response:
    """Lifecycle notifications (and the subscription's validation handshake)."""
    return _receive(request, intake, lifecycle_url=True)


def _receive(request: Request, intake: Intake, *, lifecycle_url: bool) -> Response:
    token = request.query_params.get("validationToken")
    if token is not None:
        return answer(intake, VALIDATION, lambda: _handshake(token))

    def process() -> Delivered:
        items = parse_items(intake.json())
        # One transaction (see api.receipt); the messages are published only once it has
        # committed (the ledger rule).
        planned: list[PlannedSync] = []
        try:
            try:
                verdicts, sends, logged = _commit(intake, items, lifecycle_url, planned, True)
            except StoreChanged:  # rolled back: a store changed since the lookup
                for plan in planned:
                    plan.cancel()
                planned.clear()
                verdicts, sends, logged = _commit(intake, items, lifecycle_url, planned, False)
        except BaseException:
            for plan in planned:  # not committed: the jobs their markers name do not exist
                plan.cancel()
            raise
        publish_after_commit(planned, sends, logged)
        ignored = tuple(v.ignored.reason for v in verdicts if v.ignored is not None)
        accepted = len(verdicts) - len(ignored)
        body = {"accepted": accepted, "ignored": len(ignored)}
        return Delivered(JSONResponse(body, ACK_STATUS), processed=accepted > 0, ignored=ignored)

    return answer(intake, LIFECYCLE if lifecycle_url else NOTIFICATIONS, process)


def _handshake(token: str) -> Delivered:
    """Echo the (already URL-decoded) validation token as text/plain within Graph's 10 s.

    Not logged: anyone may call it, and the token itself must never be logged.
    """
    if not token or not token.isprintable():
        raise Rejected(400, "validationToken is empty or not printable")
    return Delivered(PlainTextResponse(token, headers={"X-Content-Type-Options": "nosniff"}))


def _commit(
    intake: Intake,
    items: list[Any],
    lifecycle_url: bool,
    planned: list[PlannedSync],
    together: bool,
) -> tuple[list[Verdict], list[Callable[[], object]], list[uuid.UUID]]:
    """Subscriptions looked up, then job rows, subscriptions touched and delivery rows written.

    ``together``: the job rows are written in the receipt's one statement (StoreChanged, and
    nothing of the receipt kept, when a store is no longer active); else one by one, each
    store's refusal becoming an ignored verdict. A body that syncs at most one store (the
    common case) takes an autocommit connection: the lookup, then the statement, each its own
    transaction, two PostgreSQL round trips in all where a transaction around them cost a
    BEGIN, a COMMIT and the pool's ping more (a lookup inside the writes' transaction would
    lock nothing anyway, and the statement writes a job row only for a store still active
    then). Several stores' job rows must commit together: one transaction. Plans are appended
    to ``planned``. Returns the verdicts, the lifecycle sends to make once committed, and the
    delivery rows' ids.
    """
    wanted = subscription_ids(items)
    if together:
        lookup = functools.partial(outlook_subscriptions, subscription_ids=wanted)
        with statement_connection(lookup) as (connection, found):
            done = _write(intake, connection, None, items, found, lifecycle_url, planned, True)
            if done is not None:
                return done
    with service_session() as session:
        connection = session.connection()
        found = outlook_subscriptions(connection, wanted)
        done = _write(intake, connection, session, items, found, lifecycle_url, planned, together)
        assert done is not None  # in a transaction it always writes
        return done


def _write(
    intake: Intake,
    connection: Connection,
    session: Session | None,
    items: list[Any],
    subscriptions: dict[str, SubscriptionRef],
    lifecycle_url: bool,
    planned: list[PlannedSync],
    together: bool,
) -> tuple[list[Verdict], list[Callable[[], object]], list[uuid.UUID]] | None:
    """``_commit``'s writes. ``session`` None: ``connection`` is in autocommit, where only one
    job row fits the statement's all or nothing (None, nothing done, for more)."""
    judged = [judge(item, subscriptions, lifecycle_url) for item in items]
    syncs, sends = _wanted(judged)
    if session is None and len(syncs) > 1:
        return None
    jobs: list[tuple[PlannedSync, SyncTrigger]] = []
    failed: dict[uuid.UUID, Ignored] = {}
    for store_id, trigger in syncs.items():
        if together:
            plan = reserve_sync(session, store_id)
            if plan is not None:
                planned.append(plan)
                jobs.append((plan, trigger))
            continue
        assert session is not None
        try:
            plan = plan_sync(session, store_id, trigger)
        except ValidationFailure as exc:  # one store's fate must not refuse the others
            # Raised before any write (the store vanished or was paused since the lookup),
            # so the transaction goes on for the other stores.
            failed[store_id] = as_ignored(exc)
        else:
            if plan is not None:
                planned.append(plan)
    verdicts = [_with_failure(v, failed) for v in judged]
    touched, rows = _log_rows(verdicts)
    touch = subscriptions_touch(touched) if touched else None
    logged = write_receipt(connection, jobs, touch, rows, intake.elapsed_ms())
    return verdicts, sends, logged


def _wanted(
    verdicts: list[Verdict],
) -> tuple[dict[uuid.UUID, SyncTrigger], list[Callable[[], object]]]:
    """One sync per store, and the lifecycle tasks to send once the transaction committed."""
    syncs: dict[uuid.UUID, SyncTrigger] = {}
    tasks: dict[tuple[str, uuid.UUID], None] = {}
    for verdict in verdicts:
        if verdict.ignored is not None or verdict.subscription is None:
            continue
        event = verdict.lifecycle_event
        store_id = verdict.subscription.store.id
        if event in LIFECYCLE_TASKS:
            tasks[(LIFECYCLE_TASKS[event], verdict.subscription.id)] = None
        elif event is LifecycleEvent.MISSED:
            syncs[store_id] = SyncTrigger.RESYNC  # a resync covers a change notification too
        else:
            syncs.setdefault(store_id, SyncTrigger.WEBHOOK)
    sends: list[Callable[[], object]] = [
        functools.partial(celery_app.send_task, name, args=[str(row_id)]) for name, row_id in tasks
    ]
    return syncs, sends


def _with_failure(verdict: Verdict, failed: dict[uuid.UUID, Ignored]) -> Verdict:
    asked_sync = verdict.ignored is None and verdict.lifecycle_event not in LIFECYCLE_TASKS
    if asked_sync and verdict.store_id in failed:
        return dataclasses.replace(verdict, ignored=failed[verdict.store_id])
    return verdict


def _log_rows(verdicts: list[Verdict]) -> tuple[set[uuid.UUID], list[DeliveryRow]]:
    """The subscriptions to touch, and one delivery row per verified (subscription, kind)."""
    groups: dict[tuple[str | None, str], list[Verdict]] = defaultdict(list)
    for verdict in verdicts:
        if verdict.subscription is not None:  # unverified items are counted, never logged
            groups[(verdict.subscription_id, verdict.webhook_type)].append(verdict)
    touched = {v.subscription.id for group in groups.values() for v in group if v.subscription}
    rows = []
    for (sub_id, webhook_type), group in groups.items():
        ignored = [v.ignored for v in group if v.ignored is not None]
        message = None
        if ignored:
            message = "; ".join(sorted({i.message for i in ignored}))
            message += f" [{len(ignored)} of {len(group)} items]"
        store = _logged_store(group)
        rows.append(DeliveryRow(store, sub_id, webhook_type, ACK_STATUS, message, not ignored))
    return touched, rows


def _logged_store(group: list[Verdict]) -> uuid.UUID | None:
    """The group's store, or None when it vanished meanwhile (a row cannot name it then)."""
    if any(v.ignored is not None and v.ignored.store_id is None for v in group):
        return None
    return group[0].store_id
