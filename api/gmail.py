"""``POST /webhooks/gmail``: Pub/Sub push of Gmail watch notifications.

Pub/Sub treats only 102, 200, 201, 202 and 204 as an acknowledgement; every other status is a
negative acknowledgement, and the message is redelivered with backoff until the subscription's
retention ends (up to 7 days) — Google Cloud, "Push subscriptions" / "Receive messages using
push", acknowledgement status codes. So each answer is chosen by whether a retry could help:

=============================================  ======  =========================================
case                                           status  why
=============================================  ======  =========================================
sync requested or folded into the pending one  204     acknowledged: done
authenticated, but never processable:          204     acknowledged (success = false, "ignored
unreadable or too large body, bad base64,              (<reason>): …" in the delivery log,
non-JSON data, missing or mistyped fields,             counted): a redelivery would fail the same
unknown (deleted) mailbox, store not active            way for 7 days
missing, invalid or expired token              401     not from Pub/Sub: refused, learns nothing,
token of another account, email unverified     403     no delivery-log row (counted, logged)
our database, Redis, broker or Google's JWKS   503     our outage: Pub/Sub retries, and the retry
unreachable; push account not configured               succeeds once we are back
=============================================  ======  =========================================

The token is verified before the body is looked at, so nothing about the body reaches a sender
that is not Pub/Sub.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Request, Response

from api.intake import (
    Delivered,
    Intake,
    Receiver,
    answer,
    clean_id,
    publish_after_commit,
    read_intake,
)
from api.lookups import StoreRef, gmail_store, gmail_watch_touch
from api.outcomes import Ignored, IgnoreReason
from api.push_auth import PushTokenVerifier
from api.receipt import DeliveryRow, StoreChanged, write_receipt
from models import SyncTrigger
from syncguard.db import service_session
from tasks.sync.requests import PlannedSync, plan_sync, reserve_sync

logger = logging.getLogger(__name__)

WEBHOOK_TYPE = "gmail_push"
#: Pub/Sub push's acknowledgement: 204 No Content (one of 102, 200, 201, 202, 204).
ACK_STATUS = 204
RECEIVER = Receiver("gmail", WEBHOOK_TYPE, ACK_STATUS)
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


@router.post("/webhooks/gmail", status_code=ACK_STATUS)
def gmail_push(request: Request, intake: Annotated[Intake, Depends(read_intake)]) -> Response:
    """Verify the push, then enqueue (or fold) a sync of the mailbox's store; 204 when done."""
    verifier = cast(PushTokenVerifier, request.app.state.push_verifier)
    message_id = _peek_message_id(intake.body)

    def process() -> Delivered:
        verifier.verify(request.headers.get("authorization"), str(request.url))
        notification = decode_push(intake.json())
        store, planned, logged = _commit(intake, notification, message_id)
        if not store.syncable:
            raise Ignored(
                IgnoreReason.STORE_INACTIVE, f"store is {store.status.value}", store_id=store.id
            )
        if planned is not None:
            publish_after_commit([planned], [], logged)
        return Delivered(Response(status_code=ACK_STATUS))

    return answer(intake, RECEIVER, process, message_id)


def _commit(
    intake: Intake, notification: GmailNotification, message_id: str | None
) -> tuple[StoreRef, PlannedSync | None, list[uuid.UUID]]:
    """One transaction: the store looked up, its watch touched, the job and delivery rows.

    Returns the store, the sync to publish now that it has committed (None: folded, or the
    store is not active) and the delivery rows written. Ignored for an unknown mailbox.
    """
    try:
        return _transaction(intake, notification, message_id, together=True)
    except StoreChanged:  # rolled back: the store was paused or deleted since the lookup
        return _transaction(intake, notification, message_id, together=False)


def _transaction(
    intake: Intake, notification: GmailNotification, message_id: str | None, *, together: bool
) -> tuple[StoreRef, PlannedSync | None, list[uuid.UUID]]:
    """``_commit``'s transaction. ``together``: the job row is written in the receipt's one
    statement (see api.receipt; StoreChanged when it could not be); else by ``plan_sync``,
    whose refusal (the store no longer active) propagates and is answered as ignored."""
    planned: PlannedSync | None = None
    try:
        with service_session() as session:
            connection = session.connection()
            store = gmail_store(connection, notification.email_address)
            if store is None:
                raise Ignored(IgnoreReason.UNKNOWN_MAILBOX, "no store has this mailbox address")
            # The notification's historyId is only logged: the sync reads from our cursor.
            logger.info(
                "gmail push for store %s at historyId %s", store.id, notification.history_id
            )
            touch = gmail_watch_touch(store.id)  # the watch works, whatever the store's state
            if not store.syncable:
                connection.execute(touch.statement, touch.params)
                return store, None, []
            jobs: list[tuple[PlannedSync, SyncTrigger]] = []
            if together:
                planned = reserve_sync(session, store.id)
                jobs = [] if planned is None else [(planned, SyncTrigger.WEBHOOK)]
            else:
                planned = plan_sync(session, store.id, SyncTrigger.WEBHOOK)
            row = DeliveryRow(store.id, message_id, WEBHOOK_TYPE, ACK_STATUS, None, True)
            logged = write_receipt(connection, jobs, touch, [row], intake.elapsed_ms())
    except BaseException:
        if planned is not None:  # the transaction did not commit: its job does not exist
            planned.cancel()
        raise
    return store, planned, logged


def decode_push(body: Any) -> GmailNotification:
    """The notification inside a Pub/Sub push body; Ignored (malformed) naming what is wrong."""
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, dict):
        raise _malformed("body lacks a message object")
    data = message.get("data")
    if not isinstance(data, str) or not data:
        raise _malformed("message.data missing")
    try:
        raw = data.strip().rstrip("=").encode("ascii").translate(_URLSAFE)
        decoded = base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise _malformed("message.data is not valid base64") from exc
    try:
        payload = json.loads(decoded)
    except (ValueError, RecursionError) as exc:
        raise _malformed("message.data is not JSON") from exc
    if not isinstance(payload, dict):
        raise _malformed("message.data is not a JSON object")
    address = payload.get("emailAddress")
    if not isinstance(address, str) or not _plausible_address(address):
        raise _malformed("message.data lacks a valid emailAddress")
    history_id = payload.get("historyId")
    if isinstance(history_id, bool) or not isinstance(history_id, str | int):
        raise _malformed("message.data lacks a historyId string or number")
    if not (str(history_id).isascii() and str(history_id).isdigit()):
        raise _malformed("message.data historyId is not a number")
    return GmailNotification(address, str(history_id))


def _malformed(detail: str) -> Ignored:
    return Ignored(IgnoreReason.MALFORMED, detail)


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
