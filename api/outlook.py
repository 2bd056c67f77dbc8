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
import logging
import uuid
from collections import defaultdict
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

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
from api.intake import Delivered, Intake, Receiver, answer, read_intake, record
from api.lookups import outlook_subscriptions, touch_subscriptions
from api.outcomes import NEVER_SUCCEEDING_ERRORS, Ignored, as_ignored
from models import SyncTrigger
from syncguard.db import service_session
from tasks import app as celery_app
from tasks.sync.requests import request_sync

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
        with service_session() as session:
            subscriptions = outlook_subscriptions(session, subscription_ids(items))
        verdicts = _act([judge(item, subscriptions, lifecycle_url) for item in items])
        _log(intake, verdicts)
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


def _act(verdicts: list[Verdict]) -> list[Verdict]:
    """Publish lifecycle tasks and request one sync per store; the verdicts, with items whose
    sync can never be requested (store paused or deleted meanwhile) turned into ignored ones."""
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
    for name, row_id in tasks:
        celery_app.send_task(name, args=[str(row_id)])
    failed: dict[uuid.UUID, Ignored] = {}
    for store_id, trigger in syncs.items():
        try:
            request_sync(store_id, trigger)
        except NEVER_SUCCEEDING_ERRORS as exc:  # one store's fate must not refuse the others
            failed[store_id] = as_ignored(exc)
    return [_with_failure(v, failed) for v in verdicts]


def _with_failure(verdict: Verdict, failed: dict[uuid.UUID, Ignored]) -> Verdict:
    asked_sync = verdict.ignored is None and verdict.lifecycle_event not in LIFECYCLE_TASKS
    if asked_sync and verdict.store_id in failed:
        return dataclasses.replace(verdict, ignored=failed[verdict.store_id])
    return verdict


def _log(intake: Intake, verdicts: list[Verdict]) -> None:
    """One delivery-log row per verified (subscription, kind) in the body; touch those."""
    groups: dict[tuple[str | None, str], list[Verdict]] = defaultdict(list)
    for verdict in verdicts:
        if verdict.subscription is not None:  # unverified items are counted, never logged
            groups[(verdict.subscription_id, verdict.webhook_type)].append(verdict)
    if not groups:
        return
    touched = {v.subscription.id for group in groups.values() for v in group if v.subscription}
    with service_session() as session:
        touch_subscriptions(session, touched)
        for (sub_id, webhook_type), group in groups.items():
            ignored = [v.ignored for v in group if v.ignored is not None]
            message = None
            if ignored:
                message = "; ".join(sorted({i.message for i in ignored}))
                message += f" [{len(ignored)} of {len(group)} items]"
            record(
                intake,
                _logged_store(group),
                sub_id,
                webhook_type,
                ACK_STATUS,
                message,
                success=not ignored,
                session=session,
            )


def _logged_store(group: list[Verdict]) -> uuid.UUID | None:
    """The group's store, or None when it vanished meanwhile (a row cannot name it then)."""
    if any(v.ignored is not None and v.ignored.store_id is None for v in group):
        return None
    return group[0].store_id
