"""``POST /webhooks/outlook`` and ``/webhooks/outlook/lifecycle``: Microsoft Graph notifications.

A body may mix items of several subscriptions. Each item is judged alone (known subscription,
matching clientState, known lifecycle event). When at least one item is accepted the body gets
202: the accepted items are acted on, the refused ones are only logged (a 4xx would make Graph
redeliver the good ones too). When no item is accepted the body gets the first refusal's 4xx.
Each store gets at most one sync request per body; each (task, subscription) at most one task.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from api.errors import OUTAGE_ERRORS
from api.graph_items import (
    LIFECYCLE_TYPE,
    NOTIFICATION_TYPE,
    LifecycleEvent,
    Verdict,
    judge,
    parse_items,
    subscription_ids,
)
from api.intake import Intake, answer, json_error, parse_json, read_intake, record
from api.lookups import outlook_subscriptions, touch_subscriptions
from models import SyncTrigger
from safeguards.health_metrics.prometheus import count_webhook
from syncguard.db import service_session
from tasks import app as celery_app
from tasks.sync.requests import request_sync

#: Celery tasks (by name: tasks/webhooks.py) that answer lifecycle events about a subscription.
LIFECYCLE_TASKS = {
    LifecycleEvent.REAUTHORIZATION_REQUIRED: "tasks.webhooks.reauthorize_subscription",
    LifecycleEvent.SUBSCRIPTION_REMOVED: "tasks.webhooks.recreate_subscription",
}
VALIDATION_TYPE = "outlook_validation"

logger = logging.getLogger(__name__)

router = APIRouter()


@router.post("/webhooks/outlook", status_code=202)
def outlook_notifications(
    request: Request, intake: Annotated[Intake, Depends(read_intake)]
) -> Response:
    """Change notifications (and the subscription's validation handshake)."""
    return _receive(request, intake, lifecycle_url=False)


@router.post("/webhooks/outlook/lifecycle", status_code=202)
def outlook_lifecycle(
    request: Request, intake: Annotated[Intake, Depends(read_intake)]
) -> Response:
    """Lifecycle notifications (and the subscription's validation handshake)."""
    return _receive(request, intake, lifecycle_url=True)


def _receive(request: Request, intake: Intake, *, lifecycle_url: bool) -> Response:
    token = request.query_params.get("validationToken")
    if token is not None:
        return _counted(intake, VALIDATION_TYPE, _handshake(intake, token))
    webhook_type = LIFECYCLE_TYPE if lifecycle_url else NOTIFICATION_TYPE

    def process() -> Response:
        items = parse_items(parse_json(intake.body))
        with service_session() as session:
            subscriptions = outlook_subscriptions(session, subscription_ids(items))
        verdicts = [judge(item, subscriptions, lifecycle_url) for item in items]
        accepted = [v for v in verdicts if v.rejection is None]
        if accepted:
            notes = _act(accepted)
            status, response = (
                202,
                JSONResponse(
                    {"accepted": len(accepted), "refused": len(verdicts) - len(accepted)}, 202
                ),
            )
        else:
            first = next(v.rejection for v in verdicts if v.rejection is not None)
            notes, status, response = {}, first.status, json_error(first.status, first.reason)
        _log(intake, verdicts, status, notes)
        return response

    return _counted(intake, webhook_type, answer(intake, webhook_type, process, None))


def _counted(intake: Intake, webhook_type: str, response: Response) -> Response:
    """Count the delivery (status class, latency) in Prometheus, then hand the answer back."""
    count_webhook("outlook", webhook_type, response.status_code, intake.elapsed_ms() / 1000)
    return response


def _handshake(intake: Intake, token: str) -> Response:
    """Echo the (already URL-decoded) validation token as text/plain within Graph's 10 s."""
    try:  # the token itself is never logged
        record(intake, None, None, VALIDATION_TYPE, 200, None)
    except OUTAGE_ERRORS:  # the handshake needs no database: answer it anyway
        logger.warning("validation handshake answered but not logged", exc_info=True)
    return PlainTextResponse(token, headers={"X-Content-Type-Options": "nosniff"})


def _act(accepted: list[Verdict]) -> dict[uuid.UUID, str]:
    """Request one sync per store and publish lifecycle tasks; notes on stores left alone."""
    syncs: dict[uuid.UUID, SyncTrigger] = {}
    tasks: dict[tuple[str, uuid.UUID], None] = {}
    notes: dict[uuid.UUID, str] = {}
    for verdict in accepted:
        assert verdict.subscription is not None  # accepted items have a subscription
        store = verdict.subscription.store
        event = verdict.lifecycle_event
        if event in LIFECYCLE_TASKS:
            tasks[(LIFECYCLE_TASKS[event], verdict.subscription.id)] = None
        elif not store.syncable:
            notes[store.id] = f"store is {store.status.value}: no sync"
        elif event is LifecycleEvent.MISSED:
            syncs[store.id] = SyncTrigger.RESYNC  # a resync covers a change notification too
        else:
            syncs.setdefault(store.id, SyncTrigger.WEBHOOK)
    for name, row_id in tasks:
        celery_app.send_task(name, args=[str(row_id)])
    for store_id, trigger in syncs.items():
        request_sync(store_id, trigger)
    return notes


def _log(intake: Intake, verdicts: list[Verdict], status: int, notes: dict[uuid.UUID, str]) -> None:
    """One delivery-log row per (subscription, kind) in the body, and the subscriptions touched."""
    groups: dict[tuple[str | None, str], list[Verdict]] = defaultdict(list)
    for verdict in verdicts:
        groups[(verdict.subscription_id, verdict.webhook_type)].append(verdict)
    touched = {v.subscription.id for v in verdicts if v.rejection is None and v.subscription}
    with service_session() as session:
        touch_subscriptions(session, touched)
        for (sub_id, webhook_type), group in groups.items():
            store_id = group[0].store_id
            refused = [v.rejection.reason for v in group if v.rejection is not None]
            if refused:
                reasons = "; ".join(sorted(set(refused)))
                message: str | None = f"{len(refused)} of {len(group)} items refused: {reasons}"
            else:
                message = None if store_id is None else notes.get(store_id)
            ok = not refused and 200 <= status < 300
            record(
                intake, store_id, sub_id, webhook_type, status, message, success=ok, session=session
            )
