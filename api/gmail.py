"""``POST /webhooks/gmail``: Pub/Sub push of Gmail watch notifications."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Request, Response

from api.errors import Rejected
from api.intake import Intake, answer, clean_id, parse_json, read_intake, record
from api.lookups import gmail_store, touch_gmail_watch
from api.push_auth import PushTokenVerifier
from models import SyncTrigger
from safeguards.health_metrics.prometheus import count_webhook
from syncguard.db import service_session
from tasks.sync.requests import request_sync

logger = logging.getLogger(__name__)

WEBHOOK_TYPE = "gmail_push"
#: Longest mailbox address we look up, in characters (the column's width).
MAX_ADDRESS_CHARS = 320
#: Translates the base64url alphabet to the standard one (Pub/Sub may send either).
_URLSAFE = bytes.maketrans(b"-_", b"+/")

router = APIRouter()


@dataclass(frozen=True)
class GmailNotification:
    """The decoded ``message.data`` of a push: whose mailbox changed, up to which historyId."""

    email_address: str
    history_id: str


@router.post("/webhooks/gmail", status_code=204)
def gmail_push(request: Request, intake: Annotated[Intake, Depends(read_intake)]) -> Response:
    """Verify the push, then enqueue (or fold) a sync of the mailbox's store; 204 when done."""
    verifier = cast(PushTokenVerifier, request.app.state.push_verifier)
    message_id = _peek_message_id(intake.body)

    def process() -> Response:
        verifier.verify(request.headers.get("authorization"), str(request.url))
        notification = decode_push(parse_json(intake.body))
        with service_session() as session:
            store = gmail_store(session, notification.email_address)
        if store is None:
            raise Rejected(404, "unknown mailbox address", webhook_id=message_id)
        # The notification's historyId is only logged: the sync reads from our stored cursor.
        logger.info("gmail push for store %s at historyId %s", store.id, notification.history_id)
        note = None
        if store.syncable:
            request_sync(store.id, SyncTrigger.WEBHOOK)
        else:
            note = f"store is {store.status.value}: no sync"
        with service_session() as session:
            touch_gmail_watch(session, store.id)
            record(intake, store.id, message_id, WEBHOOK_TYPE, 204, note, session=session)
        return Response(status_code=204)

    response = answer(intake, WEBHOOK_TYPE, process, message_id)
    count_webhook("gmail", WEBHOOK_TYPE, response.status_code, intake.elapsed_ms() / 1000)
    return response


def decode_push(body: Any) -> GmailNotification:
    """The notification inside a Pub/Sub push body, or a 400 naming what is wrong."""
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, dict):
        raise Rejected(400, "body lacks a message object")
    data = message.get("data")
    if not isinstance(data, str) or not data:
        raise Rejected(400, "message.data missing")
    try:
        raw = data.strip().rstrip("=").encode("ascii").translate(_URLSAFE)
        decoded = base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise Rejected(400, "message.data is not valid base64") from exc
    try:
        payload = json.loads(decoded)
    except (ValueError, RecursionError) as exc:
        raise Rejected(400, "message.data is not JSON") from exc
    if not isinstance(payload, dict):
        raise Rejected(400, "message.data is not a JSON object")
    address = payload.get("emailAddress")
    if not isinstance(address, str) or not _plausible_address(address):
        raise Rejected(400, "message.data lacks a valid emailAddress")
    history_id = payload.get("historyId")
    if isinstance(history_id, bool) or not isinstance(history_id, str | int):
        raise Rejected(400, "message.data lacks a historyId string or number")
    if not str(history_id).isdigit():
        raise Rejected(400, "message.data historyId is not a number")
    return GmailNotification(address, str(history_id))


def _plausible_address(address: str) -> bool:
    return 3 <= len(address) <= MAX_ADDRESS_CHARS and "@" in address and address.isprintable()


def _peek_message_id(body: bytes) -> str | None:
    """The Pub/Sub messageId for the log, read before (and whatever) the verdict."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return None
    message = parsed.get("message") if isinstance(parsed, dict) else None
    if not isinstance(message, dict):
        return None
    return clean_id(message.get("messageId") or message.get("message_id"))
