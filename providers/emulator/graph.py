"""Microsoft Graph mail routes: subscriptions (with validation handshake) and messages/delta."""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from providers.emulator.context import EmulatorContext, context
from providers.emulator.faults import take_stale_cursor
from providers.emulator.guard import enter, graph_error
from providers.emulator.state import (
    SYSTEM_LABELS,
    Mailbox,
    Message,
    Subscription,
    decode_token,
    encode_token,
    iso,
)

#: Most subscriptions one mailbox may hold.
MAX_SUBSCRIPTIONS = 1000
#: Longest clientState Graph accepts, in characters.
MAX_CLIENT_STATE = 128
_PAGE_SIZE = re.compile(r"odata\.maxpagesize\s*=\s*(\d+)")

router = APIRouter(prefix="/v1.0")


def _expiration(ctx: EmulatorContext, raw: object) -> datetime:
    """Parse and clamp a requested expirationDateTime to [min, max] minutes from now."""
    if not isinstance(raw, str):
        raise graph_error(400, "expirationDateTime is required.", "InvalidRequest")
    try:
        wanted = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise graph_error(400, f"Invalid expirationDateTime {raw!r}.", "InvalidRequest") from exc
    if wanted.tzinfo is None:
        wanted = wanted.replace(tzinfo=UTC)
    now = datetime.now(UTC)
    low = now + timedelta(minutes=ctx.config.graph_min_subscription_minutes)
    high = now + timedelta(minutes=ctx.config.graph_max_subscription_minutes)
    return min(max(wanted, low), high)


async def _validate(ctx: EmulatorContext, box: Mailbox, url: str) -> bool:
    """The validationToken handshake: 200, text/plain, the decoded token echoed back."""
    token = (
        f"Validation: Testing client application reachability for subscription "
        f"Request-Id: {secrets.token_hex(8)}"
    )
    status: int | None = None
    error: str | None = None
    ok = False
    try:
        async with httpx.AsyncClient(timeout=ctx.config.validation_timeout_s) as client:
            answer = await client.post(
                url, params={"validationToken": token}, headers={"Content-Type": "text/plain"}
            )
        status = answer.status_code
        ok = (
            status == 200
            and answer.text == token
            and answer.headers.get("content-type", "").startswith("text/plain")
        )
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    with ctx.state.lock:
        box.stats.deliveries.append(
            {
                "kind": "graph_validation",
                "url": url,
                "status": status,
                "error": error,
                "ok": ok,
                "at": iso(datetime.now(UTC)),
            }
        )
    return ok


def _owned(ctx: EmulatorContext, box: Mailbox, subscription_id: str) -> Subscription:
    with ctx.state.lock:
        sub = ctx.state.subscriptions.get(subscription_id)
        if sub is None or sub.address != box.address or sub.expiration <= datetime.now(UTC):
            raise graph_error(
                404, f"The object was not found: {subscription_id}", "ResourceNotFound"
            )
        return sub


@router.post("/subscriptions", status_code=201)
async def create_subscription(request: Request) -> dict[str, object]:
    """Create a subscription after validating both notification URLs."""
    ctx = context(request)
    box = await enter(request, "graph.subscriptions.create", "graph", "me")
    body: dict[str, Any] = await request.json()
    url, lifecycle = body.get("notificationUrl"), body.get("lifecycleNotificationUrl")
    change_types = [c.strip() for c in str(body.get("changeType", "")).split(",") if c.strip()]
    client_state = body.get("clientState")
    if not isinstance(url, str) or not body.get("resource") or not change_types:
        raise graph_error(
            400, "notificationUrl, resource and changeType are required.", "InvalidRequest"
        )
    if not set(change_types) <= {"created", "updated", "deleted"}:
        raise graph_error(400, "Invalid changeType.", "InvalidRequest")
    if client_state is not None and len(str(client_state)) > MAX_CLIENT_STATE:
        raise graph_error(400, "clientState is longer than 128 characters.", "InvalidRequest")
    expiration = _expiration(ctx, body.get("expirationDateTime"))
    if len(ctx.state.subscriptions_of(box.address)) >= MAX_SUBSCRIPTIONS:
        raise graph_error(403, "Subscription limit reached for this mailbox.", "ExtensionError")
    for target in [url] + ([lifecycle] if isinstance(lifecycle, str) else []):
        if not await _validate(ctx, box, target):
            raise graph_error(
                400,
                "Subscription validation request failed. Notification endpoint must "
                f"respond with 200 OK to validation request. ({target})",
                "ValidationError",
            )
    sub = Subscription(
        id=str(uuid.uuid4()),
        address=box.address,
        resource=str(body["resource"]),
        change_types=change_types,
        notification_url=url,
        lifecycle_url=lifecycle if isinstance(lifecycle, str) else None,
        client_state=None if client_state is None else str(client_state),
        expiration=expiration,
    )
    with ctx.state.lock:
        ctx.state.subscriptions[sub.id] = sub
    return sub.as_json()


@router.get("/subscriptions/{subscription_id}")
async def get_subscription(request: Request, subscription_id: str) -> dict[str, object]:
    """One live subscription."""
    box = await enter(request, "graph.subscriptions.get", "graph", "me")
    return _owned(context(request), box, subscription_id).as_json()


@router.patch("/subscriptions/{subscription_id}")
async def renew_subscription(request: Request, subscription_id: str) -> dict[str, object]:
    """Renew: set a new (clamped) expirationDateTime."""
    ctx = context(request)
    box = await enter(request, "graph.subscriptions.update", "graph", "me")
    sub = _owned(ctx, box, subscription_id)
    body: dict[str, Any] = await request.json()
    expiration = _expiration(ctx, body.get("expirationDateTime"))
    with ctx.state.lock:
        sub.expiration = expiration
    return sub.as_json()


@router.post("/subscriptions/{subscription_id}/reauthorize")
async def reauthorize(request: Request, subscription_id: str) -> Response:
    """Answer a reauthorizationRequired lifecycle event."""
    ctx = context(request)
    box = await enter(request, "graph.subscriptions.reauthorize", "graph", "me")
    _owned(ctx, box, subscription_id)
    return Response(status_code=200)


@router.delete("/subscriptions/{subscription_id}", status_code=204)
async def delete_subscription(request: Request, subscription_id: str) -> Response:
    """Delete a subscription."""
    ctx = context(request)
    box = await enter(request, "graph.subscriptions.delete", "graph", "me")
    sub = _owned(ctx, box, subscription_id)
    with ctx.state.lock:
        ctx.state.subscriptions.pop(sub.id, None)
    return Response(status_code=204)


@router.get("/me/mailFolders/{folder}/messages/delta")
async def delta_me(request: Request, folder: str) -> JSONResponse:
    """Delta for the signed-in mailbox."""
    return await delta(request, "me", folder)


@router.get("/users/{user_id}/mailFolders/{folder}/messages/delta")
async def delta(request: Request, user_id: str, folder: str) -> JSONResponse:
    """One page of a delta round: nextLink until the last page, which carries the deltaLink."""
    ctx = context(request)
    box = await enter(request, "graph.messages.delta", "graph", user_id)
    folder = folder.split("('")[-1].rstrip("')").lower()
    match = _PAGE_SIZE.search(request.headers.get("prefer", ""))
    size = int(match.group(1)) if match else ctx.config.graph_default_page_size
    params = request.query_params
    cursor = params.get("$skiptoken") or params.get("$deltatoken")
    with ctx.state.lock:
        since, upto, after = None, box.seq, 0
        if cursor is not None:
            data = decode_token(cursor) or {}
            if (
                take_stale_cursor(box.faults)
                or data.get("a") != box.address
                or data.get("e") != box.delta_epoch
                or data.get("f") != folder
            ):
                raise _stale(ctx)
            since = int(str(data["s"])) if data.get("s") is not None else None
            after = since or 0
            if "$skiptoken" in params:
                upto, after = int(str(data["u"])), int(str(data["o"]))
        items, last = _changes(box, folder, since, after, upto, size)
        epoch = box.delta_epoch
    base = str(request.url.replace(query=""))
    body: dict[str, object] = {
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(message)",
        "value": items,
    }
    token: dict[str, object] = {"a": box.address, "e": epoch, "f": folder}
    if last < upto:
        token.update(s=since, u=upto, o=last)
        body["@odata.nextLink"] = f"{base}?$skiptoken={encode_token(token)}"
    else:
        token.update(s=upto)
        body["@odata.deltaLink"] = f"{base}?$deltatoken={encode_token(token)}"
    return JSONResponse(body)


def _stale(ctx: EmulatorContext) -> Exception:
    status = ctx.config.stale_delta_status
    return graph_error(status, "The sync state generation is not valid.", "syncStateNotFound")


def _changes(
    box: Mailbox, folder: str, since: int | None, after: int, upto: int, size: int
) -> tuple[list[dict[str, object]], int]:
    """Up to ``size`` changes of the round (since, upto] whose sequence is past ``after``.

    Walks the mailbox's change index from ``after`` on, so a page costs its own changes, not
    the whole mailbox (a round of N messages was O(N^2) when each page re-read every message).
    A change superseded by a later one (a relabel, a deletion) is skipped at its old sequence
    and served at its latest one, once, in sequence order. Returns the items and the last
    sequence read: the next page's offset, ``upto`` when the round is complete.
    """
    items: list[dict[str, object]] = []
    seq = after
    while seq < upto and len(items) < size:
        seq += 1
        message_id = box.changes.get(seq)
        if message_id is None:
            continue
        message = box.messages.get(message_id)
        if message is not None and message.changed_seq == seq:
            if message.folder.lower() == folder:
                items.append(graph_message(message))
        elif since is not None and box.tombstones.get(message_id) == seq:
            items.append({"id": message_id, "@removed": {"reason": "deleted"}})
    return items, seq


def graph_message(message: Message) -> dict[str, object]:
    """A Graph message resource."""
    change_key = str(message.history_id)
    return {
        "@odata.etag": f'W/"{change_key}"',
        "id": message.id,
        "changeKey": change_key,
        "subject": message.subject,
        "bodyPreview": message.body[:255],
        "from": {"emailAddress": {"name": message.sender, "address": message.sender}},
        "receivedDateTime": iso(datetime.fromtimestamp(message.received_ms / 1000, UTC)),
        "categories": [lb for lb in message.labels if lb not in SYSTEM_LABELS],
        "isRead": "UNREAD" not in message.labels,
        "parentFolderId": message.folder,
        "conversationId": message.thread_id,
    }
