"""Reading an inbound body under the size limit, and answering and logging one delivery."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from api.errors import OUTAGE_ERRORS, Rejected
from safeguards.delivery_log import log_webhook_delivery
from syncguard.settings import Settings

logger = logging.getLogger(__name__)

#: Longest id (Pub/Sub messageId, Graph subscriptionId) we look up or log, in characters.
MAX_ID_CHARS = 255


@dataclass(frozen=True)
class Intake:
    """The body as read, when reading began, and the rejection reading it earned (if any)."""

    started: float
    body: bytes
    rejection: Rejected | None = None

    def elapsed_ms(self) -> int:
        """Milliseconds since the request arrived."""
        return round((time.monotonic() - self.started) * 1000)


def app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return cast(Settings, request.app.state.settings)


async def read_intake(request: Request) -> Intake:
    """The body, refused with 413 past the limit by Content-Length or by the bytes read."""
    started = getattr(request.state, "started", None) or time.monotonic()
    limit = app_settings(request).webhook_max_body_bytes
    too_large = Rejected(413, f"body exceeds {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            return Intake(started, b"", Rejected(400, "invalid Content-Length"))
        if int(declared) > limit:
            return Intake(started, b"", too_large)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:  # a lying or absent Content-Length (chunked encoding)
            return Intake(started, b"", too_large)
        chunks.append(chunk)
    return Intake(started, b"".join(chunks))


def parse_json(body: bytes) -> Any:
    """The body as JSON, or a 400."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise Rejected(400, "malformed JSON body") from exc


def clean_id(value: object) -> str | None:
    """``value`` when it is a printable id string we may look up and log, else None."""
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS and value.isprintable():
        return value
    return None


def json_error(status: int, reason: str) -> JSONResponse:
    """The JSON error answer every refusal gets."""
    return JSONResponse({"error": reason}, status_code=status)


def answer(
    intake: Intake, webhook_type: str, process: Callable[[], Response], webhook_id: str | None
) -> Response:
    """Run ``process``; log a rejection (4xx) or an outage (503) as one failed delivery."""
    try:
        if intake.rejection is not None:
            raise intake.rejection
        return process()
    except Rejected as exc:
        failure = exc
    except OUTAGE_ERRORS as exc:
        logger.warning("%s refused with 503: %s", webhook_type, type(exc).__name__, exc_info=True)
        _log_best_effort(intake, webhook_type, webhook_id, f"unavailable: {type(exc).__name__}")
        return json_error(503, "temporarily unavailable")
    try:
        record(
            intake,
            failure.store_id,
            failure.webhook_id or webhook_id,
            webhook_type,
            failure.status,
            failure.reason,
        )
    except OUTAGE_ERRORS:
        logger.warning("%s: delivery log unreachable", webhook_type, exc_info=True)
        return json_error(503, "temporarily unavailable")
    return json_error(failure.status, failure.reason)


def record(
    intake: Intake,
    store_id: uuid.UUID | None,
    webhook_id: str | None,
    webhook_type: str,
    status: int,
    error_message: str | None,
    *,
    success: bool | None = None,
    session: Session | None = None,
) -> None:
    """One inbound row in webhook_delivery_log: the status we answered and how long it took."""
    ok = 200 <= status < 300 if success is None else success
    log_webhook_delivery(
        store_id,
        webhook_id,
        webhook_type,
        ok,
        status,
        error_message,
        intake.elapsed_ms(),
        session=session,
    )


def _log_best_effort(
    intake: Intake, webhook_type: str, webhook_id: str | None, error_message: str
) -> None:
    try:
        record(intake, None, webhook_id, webhook_type, 503, error_message)
    except OUTAGE_ERRORS:
        logger.error("%s: could not log the 503 either", webhook_type, exc_info=True)
