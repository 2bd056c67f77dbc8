"""Gmail's batch endpoint, client side: many GETs in one multipart/mixed request, one answer each.

Google's "Batching requests" guide (developers.google.com/gmail/api/guides/batch): ``POST
/batch/gmail/v1`` with a ``multipart/mixed`` body, each part ``Content-Type: application/http``
holding one request line (the outer request's Authorization applies to every part), at most
100 calls and no more than 50 recommended ("larger batch sizes are likely to trigger rate
limiting"). The answer is ``multipart/mixed`` with one ``application/http`` response per call,
paired by ``Content-ID: <response-ID>`` (Google may answer in any order). Each inner call costs
its own quota units: "a set of n requests batched together counts toward your usage limit as n
requests".
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message

import httpx

#: The batch endpoint's path on the API root.
BATCH_PATH = "/batch/gmail/v1"
#: Most calls one batch may carry, and Google's recommended ceiling.
MAX_CALLS, RECOMMENDED_CALLS = 100, 50


@dataclass(frozen=True)
class Answer:
    """One inner answer: its status, header fields (names lower-cased) and body."""

    status: int
    fields: dict[str, str]
    body: bytes

    def response(self) -> httpx.Response:
        """As an ``httpx.Response``, for the adapter's error classifier and Retry-After parser."""
        return httpx.Response(self.status, headers=list(self.fields.items()), content=self.body)


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


def decode(response: httpx.Response) -> dict[str, Answer]:
    """Each inner answer of a batch response, keyed by the Content-ID of its call.

    An inner answer becomes an ``httpx.Response`` on demand (``Answer.response``), so a failed
    one is read exactly as a plain answer: error classified, Retry-After parsed. Raises
    BatchError.

    The framing is split here rather than by ``email``'s feed parser: that cost ~0.4 ms per
    part (the compat32 policy; ~50x more with the default one) and ``h11`` ~0.18 ms, more than
    the rest of ingest together. What is read is RFC 2046 §5.1.1's delimiter lines (CRLF "--"
    boundary, the last one closed by "--") and RFC 9112's status line and header fields; the
    boundary itself comes from ``email``'s Content-Type parameter parser.
    """
    kind = response.headers.get("content-type", "")
    header = Message()
    header["Content-Type"] = kind
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/mixed" or not isinstance(boundary, str):
        raise BatchError(f"batch answer is {kind or 'untyped'}, not multipart/mixed")
    delimiter = b"\r\n--" + boundary.encode()
    answers: dict[str, Answer] = {}
    # The first delimiter may open the body without the CRLF that belongs to the others.
    chunks = (b"\r\n" + response.content).split(delimiter)
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):  # the close delimiter: what follows is the epilogue
            return answers
        _, _, part = chunk.partition(b"\n")  # the rest of the delimiter line (padding)
        fields, payload = _head(part)
        raw_id = fields.get("content-id", "").strip().strip("<>")
        answers[raw_id.removeprefix("response-")] = _inner(raw_id, payload)
    raise BatchError("batch answer has no close delimiter (truncated)")


def _head(data: bytes) -> tuple[dict[str, str], bytes]:
    """Header fields (names lower-cased) and the body after the blank line."""
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        head, separator, body = data.partition(b"\n\n")
    fields: dict[str, str] = {}
    for line in head.decode("latin-1").splitlines():
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise BatchError(f"batch answer has a malformed header line: {line[:80]!r}")
        fields[name.lower()] = value.strip()
    return fields, body


def _inner(content_id: str, payload: bytes) -> Answer:
    """One ``HTTP/1.1 200 OK`` + header fields + body part as a Response."""
    status_line, _, rest = payload.partition(b"\n")
    words = status_line.split()
    if len(words) < 2 or not words[0].startswith(b"HTTP/") or not words[1].isdigit():
        raise BatchError(f"batch part {content_id!r} is not an HTTP response")
    fields, body = _head(rest)
    return Answer(int(words[1]), fields, body)
