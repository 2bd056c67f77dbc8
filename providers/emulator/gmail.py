"""Gmail API routes: watch, stop, profile, history.list, messages.list, messages.get."""

from __future__ import annotations

import base64
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from providers.emulator.context import context
from providers.emulator.faults import take_stale_cursor
from providers.emulator.guard import enter, gmail_error
from providers.emulator.state import Mailbox, Message, Watch, decode_token, encode_token

#: Largest and default page sizes of Gmail's list calls.
MAX_PAGE, DEFAULT_PAGE = 500, 100
_HISTORY_TYPES = {"messageAdded", "messageDeleted", "labelAdded", "labelRemoved"}
_PLURAL = {
    "messageAdded": "messagesAdded",
    "messageDeleted": "messagesDeleted",
    "labelAdded": "labelsAdded",
    "labelRemoved": "labelsRemoved",
}

router = APIRouter(prefix="/gmail/v1/users/{user_id}")


def _page_size(value: int | None, default: int) -> int:
    if value is not None and value < 1:
        raise gmail_error(400, "Invalid maxResults", "invalidArgument")
    return min(value or default, MAX_PAGE)


def _offset(page_token: str | None) -> int:
    if not page_token:
        return 0
    data = decode_token(page_token)
    offset = data.get("o") if data else None
    if not isinstance(offset, int):
        raise gmail_error(400, "Invalid pageToken", "invalidArgument")
    return offset


@router.post("/watch")
async def watch(request: Request, user_id: str) -> dict[str, str]:
    """Start (or renew) push notifications for the mailbox."""
    ctx = context(request)
    box = await enter(request, "gmail.watch", "gmail", user_id)
    body: dict[str, Any] = await request.json() if await request.body() else {}
    if not body.get("topicName"):
        raise gmail_error(400, "Invalid topicName", "invalidArgument")
    expiration = int((time.time() + ctx.config.gmail_watch_lifetime_s) * 1000)
    behavior = body.get("labelFilterBehavior") or body.get("labelFilterAction") or "INCLUDE"
    with ctx.state.lock:
        box.watch = Watch(list(body.get("labelIds") or []), str(behavior), expiration)
        history_id = box.history_id
    ctx.notifier.gmail_push(box.address)
    return {"historyId": str(history_id), "expiration": str(expiration)}


@router.post("/stop")
async def stop(request: Request, user_id: str) -> dict[str, str]:
    """Stop push notifications."""
    ctx = context(request)
    box = await enter(request, "gmail.stop", "gmail", user_id)
    with ctx.state.lock:
        box.watch = None
    return {}


@router.get("/profile")
async def profile(request: Request, user_id: str) -> dict[str, object]:
    """The mailbox's address, counts and current historyId."""
    ctx = context(request)
    box = await enter(request, "gmail.profile", "gmail", user_id)
    with ctx.state.lock:
        threads = {m.thread_id for m in box.messages.values()}
        return {
            "emailAddress": box.address,
            "messagesTotal": len(box.messages),
            "threadsTotal": len(threads),
            "historyId": str(box.history_id),
        }


@router.get("/history")
async def history(
    request: Request,
    user_id: str,
    start_history_id: Annotated[int, Query(alias="startHistoryId")],
    max_results: Annotated[int | None, Query(alias="maxResults")] = None,
    page_token: Annotated[str | None, Query(alias="pageToken")] = None,
    history_types: Annotated[list[str] | None, Query(alias="historyTypes")] = None,
    label_id: Annotated[str | None, Query(alias="labelId")] = None,
) -> dict[str, object]:
    """History records after startHistoryId; 404 when it is older than what is retained."""
    ctx = context(request)
    box = await enter(request, "gmail.history.list", "gmail", user_id)
    size, offset = _page_size(max_results, DEFAULT_PAGE), _offset(page_token)
    wanted = set(history_types or []) or _HISTORY_TYPES
    if not wanted <= _HISTORY_TYPES:
        raise gmail_error(400, "Invalid historyTypes", "invalidArgument")
    with ctx.state.lock:
        stale = take_stale_cursor(box.faults) or start_history_id < box.history_floor
        if stale:
            raise gmail_error(404, "Requested entity was not found.", "notFound")
        records = [
            r
            for r in box.history
            if r.id > start_history_id
            and r.kind in wanted
            and (label_id is None or label_id in _labels(r.message))
        ]
        current = box.history_id
    grouped: dict[int, dict[str, Any]] = {}
    for record in records:
        entry = grouped.setdefault(record.id, {"id": str(record.id), "messages": []})
        ref = {"id": record.message["id"], "threadId": record.message["threadId"]}
        if ref not in entry["messages"]:
            entry["messages"].append(ref)
        item: dict[str, object] = {"message": dict(record.message)}
        if record.label_ids:
            item["labelIds"] = list(record.label_ids)
        entry.setdefault(_PLURAL[record.kind], []).append(item)
    entries = list(grouped.values())
    page = entries[offset : offset + size]
    result: dict[str, object] = {"historyId": str(current)}
    if page:
        result["history"] = page
    if offset + size < len(entries):
        result["nextPageToken"] = encode_token({"o": offset + size})
    return result


@router.get("/messages")
async def list_messages(
    request: Request,
    user_id: str,
    max_results: Annotated[int | None, Query(alias="maxResults")] = None,
    page_token: Annotated[str | None, Query(alias="pageToken")] = None,
    label_ids: Annotated[list[str] | None, Query(alias="labelIds")] = None,
    q: str | None = None,
    include_spam_trash: Annotated[bool, Query(alias="includeSpamTrash")] = False,
) -> dict[str, object]:
    """Message ids newest first, by labelIds (all must match), SPAM/TRASH only on request."""
    ctx = context(request)
    box = await enter(request, "gmail.messages.list", "gmail", user_id)
    size, offset = _page_size(max_results, DEFAULT_PAGE), _offset(page_token)
    with ctx.state.lock:
        refs = _listing(box, tuple(label_ids or ()), include_spam_trash)
    result: dict[str, object] = {"resultSizeEstimate": len(refs)}
    if refs[offset : offset + size]:
        result["messages"] = refs[offset : offset + size]
    if offset + size < len(refs):
        result["nextPageToken"] = encode_token({"o": offset + size})
    return result


@router.get("/messages/{message_id}")
async def get_message(
    request: Request,
    user_id: str,
    message_id: str,
    format: str = "full",
    metadata_headers: Annotated[list[str] | None, Query(alias="metadataHeaders")] = None,
) -> dict[str, object]:
    """One message as minimal, metadata, full or raw."""
    ctx = context(request)
    box = await enter(request, "gmail.messages.get", "gmail", user_id)
    if format not in ("minimal", "metadata", "full", "raw"):
        raise gmail_error(400, f"Invalid format: {format}", "invalidArgument")
    with ctx.state.lock:
        message = box.messages.get(message_id)
        if message is None:
            raise gmail_error(404, "Requested entity was not found.", "notFound")
        return render_message(message, box.address, format, metadata_headers or [])


def _listing(box: Mailbox, label_ids: tuple[str, ...], spam_trash: bool) -> list[dict[str, str]]:
    """Refs of the matching messages, newest first; cached until the mailbox changes."""
    key = (box.seq, label_ids, spam_trash)
    if key not in box.listing:
        matches = sorted(
            (
                m
                for m in box.messages.values()
                if all(lb in m.labels for lb in label_ids)
                and (spam_trash or not {"SPAM", "TRASH"} & set(m.labels))
            ),
            key=lambda m: (m.received_ms, m.history_id),
            reverse=True,
        )
        box.listing.clear()
        box.listing[key] = [{"id": m.id, "threadId": m.thread_id} for m in matches]
    return box.listing[key]


def render_message(
    message: Message, address: str, format: str, metadata_headers: list[str]
) -> dict[str, object]:
    """A Gmail Message resource in the requested format."""
    raw = _rfc822(message, address)
    result: dict[str, object] = {
        "id": message.id,
        "threadId": message.thread_id,
        "labelIds": list(message.labels),
        "snippet": message.body[:100],
        "historyId": str(message.history_id),
        "internalDate": str(message.received_ms),
        "sizeEstimate": len(raw),
    }
    headers = _headers(message, address)
    if format == "metadata":
        wanted = {h.lower() for h in metadata_headers}
        shown = [h for h in headers if not wanted or h["name"].lower() in wanted]
        result["payload"] = {"mimeType": "text/plain", "headers": shown}
    elif format == "full":
        data = base64.urlsafe_b64encode(message.body.encode()).decode()
        result["payload"] = {
            "partId": "",
            "mimeType": "text/plain",
            "filename": "",
            "headers": headers,
            "body": {"size": len(message.body.encode()), "data": data},
        }
    elif format == "raw":
        result["raw"] = base64.urlsafe_b64encode(raw).decode()
    return result


def _labels(ref: dict[str, object]) -> list[str]:
    labels = ref.get("labelIds")
    return [str(lb) for lb in labels] if isinstance(labels, list) else []


def _headers(message: Message, address: str) -> list[dict[str, str]]:
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(message.received_ms / 1000))
    return [
        {"name": "From", "value": message.sender},
        {"name": "To", "value": address},
        {"name": "Subject", "value": message.subject},
        {"name": "Date", "value": date},
        {"name": "Message-ID", "value": f"<{message.id}@emulator>"},
    ]


def _rfc822(message: Message, address: str) -> bytes:
    lines = [f"{h['name']}: {h['value']}" for h in _headers(message, address)]
    return ("\r\n".join(lines) + "\r\n\r\n" + message.body).encode()
