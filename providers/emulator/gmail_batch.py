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
    parts = _parts(request.headers.get("content-type", ""), await request.body())
    if parts is None:
        raise gmail_error(400, "A batch body must be multipart/mixed.", "invalidArgument")
    if not parts or len(parts) > MAX_CALLS:
        raise gmail_error(400, f"A batch holds 1..{MAX_CALLS} calls.", "invalidArgument")
    answers = [(content_id, await _answer(ctx, box, payload)) for content_id, payload in parts]
    boundary = f"batch_{secrets.token_hex(12)}"
    return Response(_render(boundary, answers), media_type=f"multipart/mixed; boundary={boundary}")


def _parts(kind: str, body: bytes) -> list[tuple[str | None, bytes]] | None:
    """Each part's Content-ID and payload (the inner HTTP request); None when the body is not
    multipart/mixed with a boundary, or has no close delimiter.

    Split here rather than by ``email``'s feed parser, which was ~40 % of the emulator's work
    per batch in a sync (py-spy, issue 12): a test double must cost less than the product. What
    is read is RFC 2046 §5.1.1: delimiter lines of CRLF (or LF) "--" boundary, the last closed
    by "--", preamble and epilogue ignored; each part's header fields, a blank line, its body.
    """
    header = MimeMessage()
    header["Content-Type"] = kind
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/mixed" or not isinstance(boundary, str):
        return None
    # The first delimiter may open the body without the line break that belongs to the others.
    chunks = (b"\n" + body).split(b"\n--" + boundary.encode())
    parts: list[tuple[str | None, bytes]] = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):  # the close delimiter: what follows is the epilogue
            return parts
        _, _, part = chunk.partition(b"\n")  # the rest of the delimiter line (padding)
        head, separator, payload = part.partition(b"\r\n\r\n")
        if not separator:
            head, _, payload = part.partition(b"\n\n")
        content_id = None
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-id":
                content_id = value.strip()
        # A part's trailing CR belongs to the next delimiter's CRLF.
        parts.append((content_id, payload.removesuffix(b"\r")))
    return None


async def _answer(ctx: EmulatorContext, box: Mailbox, payload: bytes) -> Answer:
    """One inner call: parse its request line, count it, apply faults, serve it."""
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
