"""Gmail's batch endpoint: ``POST /batch/gmail/v1``, many API calls in one multipart/mixed body.

Google's "Batching requests" guide: the body is ``multipart/mixed``, each part an
``application/http`` request (request line, headers, body) with an optional ``Content-ID``; the
answer is ``multipart/mixed`` too, one ``application/http`` response per part in the same order,
its ``Content-ID`` ``response-<id>``, each with its own status. At most 100 calls; every inner
call counts against quota like a plain one, so each is counted and meets the mailbox's faults
on its own (one ``throttle_429`` of count 1 fails one part, not the batch). The outer request is
authenticated once and its token applies to every part. Inner calls served: ``messages.get``.
"""

from __future__ import annotations

import json
import re
import secrets
from email.message import Message as MimeMessage
from email.parser import BytesParser
from email.policy import compat32
from http import HTTPStatus
from urllib.parse import parse_qs, unquote, urlsplit

from fastapi import APIRouter, Request, Response

from providers.emulator.context import EmulatorContext, context
from providers.emulator.faults import take_request_fault
from providers.emulator.gmail import render_message
from providers.emulator.guard import ApiError, apply_fault, authenticate, gmail_error
from providers.emulator.state import Mailbox

#: Most calls one batch may carry (Google's guide).
MAX_CALLS = 100
_GET_MESSAGE = re.compile(r"^/gmail/v1/users/([^/]+)/messages/([^/]+)$")

router = APIRouter()

#: One part's answer: status, headers, JSON body.
Answer = tuple[int, dict[str, str], object]


@router.post("/batch/gmail/v1")
async def batch(request: Request) -> Response:
    """Answer each inner call of a multipart/mixed batch in a multipart/mixed response."""
    ctx = context(request)
    box = authenticate(request, "gmail")
    request.state.stat = (box.address, "gmail.batch")
    with ctx.state.lock:
        box.stats.requests["gmail.batch"] += 1
    kind = request.headers.get("content-type", "")
    envelope = BytesParser(policy=compat32).parsebytes(
        f"Content-Type: {kind}\r\n\r\n".encode() + await request.body()
    )
    if not envelope.is_multipart():
        raise gmail_error(400, "A batch body must be multipart/mixed.", "invalidArgument")
    parts = [p for p in envelope.get_payload() if isinstance(p, MimeMessage)]
    if not parts or len(parts) > MAX_CALLS:
        raise gmail_error(400, f"A batch holds 1..{MAX_CALLS} calls.", "invalidArgument")
    answers = [(part.get("Content-ID"), await _answer(ctx, box, part)) for part in parts]
    boundary = f"batch_{secrets.token_hex(12)}"
    return Response(_render(boundary, answers), media_type=f"multipart/mixed; boundary={boundary}")


async def _answer(ctx: EmulatorContext, box: Mailbox, part: MimeMessage) -> Answer:
    """One inner call: parse its request line, count it, apply faults, serve it."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        payload = b""
    line = payload.split(b"\r\n", 1)[0].split(b"\n", 1)[0].decode() if payload else ""
    method, _, rest = line.partition(" ")
    target = urlsplit(rest.rsplit(" HTTP/", 1)[0].strip())
    found = _GET_MESSAGE.match(target.path)
    if method != "GET" or found is None:
        unserved = f"Not served in a batch: {method} {target.path}"
        return _error(gmail_error(404, unserved, "notFound"))
    user_id, message_id = unquote(found.group(1)), unquote(found.group(2))
    with ctx.state.lock:
        box.stats.requests["gmail.messages.get"] += 1
        fault = take_request_fault(box.faults, ctx.config.timeout_fault_s)
    try:
        await apply_fault("gmail", fault)
        answer = _get_message(ctx, box, user_id, message_id, parse_qs(target.query))
    except ApiError as exc:
        answer = _error(exc)
    with ctx.state.lock:
        box.stats.record_response("gmail.messages.get", answer[0])
    return answer


def _get_message(
    ctx: EmulatorContext, box: Mailbox, user_id: str, message_id: str, query: dict[str, list[str]]
) -> Answer:
    if user_id not in ("me", box.address):
        raise gmail_error(403, "Delegation denied for " + box.address, "forbidden")
    format = (query.get("format") or ["full"])[0]
    if format not in ("minimal", "metadata", "full", "raw"):
        raise gmail_error(400, f"Invalid format: {format}", "invalidArgument")
    with ctx.state.lock:
        message = box.messages.get(message_id)
        if message is None:
            raise gmail_error(404, "Requested entity was not found.", "notFound")
        body = render_message(message, box.address, format, query.get("metadataHeaders") or [])
    return 200, {}, body


def _error(exc: ApiError) -> Answer:
    return exc.status, exc.headers, exc.body


def _render(boundary: str, answers: list[tuple[str | None, Answer]]) -> bytes:
    """The multipart/mixed answer, one application/http part per call, in order."""
    chunks: list[str] = []
    for content_id, (status, headers, body) in answers:
        chunks.append(f"--{boundary}\r\nContent-Type: application/http\r\n")
        if content_id:
            chunks.append(f"Content-ID: <response-{content_id.strip().strip('<>')}>\r\n")
        reason = HTTPStatus(status).phrase
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        chunks.append(
            f"\r\nHTTP/1.1 {status} {reason}\r\n"
            f"Content-Type: application/json; charset=UTF-8\r\n{extra}\r\n"
            f"{json.dumps(body)}\r\n"
        )
    chunks.append(f"--{boundary}--\r\n")
    return "".join(chunks).encode()
