"""Gmail's batch endpoint, client side: many GETs in one multipart/mixed request, one answer each.

Google's "Batching requests" guide (developers.google.com/gmail/api/guides/batch): ``POST
/batch/gmail/v1`` with a ``multipart/mixed`` body, each part ``Content-Type: application/http``
holding one request line (the outer request's Authorization applies to every part), at most
100 calls and no more than 50 recommended ("larger batch sizes are likely to trigger rate
limiting"). The answer is ``multipart/mixed`` with one ``application/http`` response per call,
paired by ``Content-ID: <response-ID>`` (Google may answer in any order). Each inner call costs
its own quota units: "a set of n requests batched together counts toward your usage limit as n
requests". MIME is parsed by the standard library's ``email`` package, not by hand.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from email.parser import BytesParser
from email.policy import HTTP

import httpx

#: The batch endpoint's path on the API root.
BATCH_PATH = "/batch/gmail/v1"
#: Most calls one batch may carry, and Google's recommended ceiling.
MAX_CALLS, RECOMMENDED_CALLS = 100, 50


class BatchError(ValueError):
    """The batch answer is not multipart/mixed, or a part is not an HTTP response."""


def encode(calls: Mapping[str, str]) -> tuple[str, bytes]:
    """``(Content-Type, body)`` of a batch of GETs; ``calls`` maps a Content-ID to a path+query.

    Raises ValueError for an empty batch or one over ``MAX_CALLS``.
    """
    if not 1 <= len(calls) <= MAX_CALLS:
        raise ValueError(f"a batch holds 1..{MAX_CALLS} calls, got {len(calls)}")
    boundary = f"batch_{secrets.token_hex(12)}"
    chunks = [
        f"--{boundary}\r\nContent-Type: application/http\r\nContent-ID: <{content_id}>\r\n\r\n"
        f"GET {target} HTTP/1.1\r\n\r\n"
        for content_id, target in calls.items()
    ]
    chunks.append(f"--{boundary}--\r\n")
    return f"multipart/mixed; boundary={boundary}", "".join(chunks).encode()


def decode(response: httpx.Response) -> dict[str, httpx.Response]:
    """Each inner answer of a batch response, keyed by the Content-ID of its call.

    Inner answers are ``httpx.Response`` objects (status, headers, body) so the adapter reads
    them exactly as plain answers: errors classified, Retry-After parsed. Raises BatchError.
    """
    kind = response.headers.get("content-type", "")
    envelope = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {kind}\r\n\r\n".encode() + response.content
    )
    if not envelope.is_multipart():
        raise BatchError(f"batch answer is {kind or 'untyped'}, not multipart/mixed")
    answers: dict[str, httpx.Response] = {}
    for part in envelope.iter_parts():
        raw_id = str(part.get("Content-ID") or "").strip().strip("<>")
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            raise BatchError(f"batch part {raw_id!r} has no body")
        answers[raw_id.removeprefix("response-")] = _inner(raw_id, payload)
    return answers


def _inner(content_id: str, payload: bytes) -> httpx.Response:
    """One ``HTTP/1.1 200 OK`` + headers + body part as a Response."""
    status_line, _, rest = payload.partition(b"\n")
    fields = status_line.split()
    if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
        raise BatchError(f"batch part {content_id!r} is not an HTTP response")
    inner = BytesParser(policy=HTTP).parsebytes(rest)
    body = inner.get_payload(decode=True)
    headers = [(name, str(value)) for name, value in inner.items()]
    return httpx.Response(
        int(fields[1]), headers=headers, content=body if isinstance(body, bytes) else b""
    )
