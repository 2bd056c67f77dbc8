"""Reading an inbound body under the size limit, and answering, logging and counting a delivery.

``answer`` is the one place a receiver's outcome (see ``api.outcomes``) becomes an HTTP status,
a ``webhook_delivery_log`` row and a Prometheus observation.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from api.errors import OUTAGE_ERRORS, Rejected
from api.lookups import forget_deliveries
from api.outcomes import NEVER_SUCCEEDING_ERRORS, Ignored, IgnoreReason, as_ignored
from safeguards.delivery_log import log_webhook_delivery
from safeguards.health_metrics.prometheus import WebhookOutcome, count_webhook
from syncguard.db import service_session
from syncguard.settings import Settings
from tasks.sync.requests import PlannedSync

logger = logging.getLogger(__name__)

#: Longest id (Pub/Sub messageId, Graph subscriptionId) we look up or log, in characters.
MAX_ID_CHARS = 255


@dataclass(frozen=True)
class Intake:
    """The body as read, when reading began, and why it could not be read (if it could not)."""

    started: float
    body: bytes
    #: Why the body was not read: too large, or an invalid Content-Length. Else None.
    unreadable: str | None = None

    def elapsed_ms(self) -> int:
        """Milliseconds since the request arrived."""
        return round((time.monotonic() - self.started) * 1000)

    def json(self) -> Any:
        """The body as JSON; Ignored (malformed) when it was not read or does not parse."""
        if self.unreadable is not None:
            raise Ignored(IgnoreReason.MALFORMED, self.unreadable)
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise Ignored(IgnoreReason.MALFORMED, "malformed JSON body") from exc


@dataclass(frozen=True)
class Delivered:
    """What a receiver made of a delivery: its answer, and the notifications it ignored."""

    response: Response
    #: Whether at least one notification was acted on (else every one was ignored).
    processed: bool = True
    #: One reason per notification acknowledged without processing.
    ignored: tuple[IgnoreReason, ...] = ()


def app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return cast(Settings, request.app.state.settings)


async def read_intake(request: Request) -> Intake:
    """The body, or why it was not read: past the limit by Content-Length or by the bytes read."""
    started = getattr(request.state, "started", None) or time.monotonic()
    limit = app_settings(request).webhook_max_body_bytes
    too_large = f"body exceeds {limit} bytes"
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            return Intake(started, b"", "invalid Content-Length")
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


def clean_id(value: object) -> str | None:
    """``value`` when it is a printable id string we may look up and log, else None."""
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS and value.isprintable():
        return value
    return None


def json_error(status: int, reason: str) -> JSONResponse:
    """The JSON error answer every refusal gets."""
    return JSONResponse({"error": reason}, status_code=status)


@dataclass(frozen=True)
class Receiver:
    """Who answers: provider and kind (metric labels), the ack status, whether to log ignores.

    ``log_ignored`` is False where the sender is not yet authenticated when a whole-delivery
    Ignored can be raised (Graph: clientState is checked per item), so anyone could fill the log.
    """

    provider: str
    webhook_type: str
    ack_status: int
    log_ignored: bool = True


def answer(
    intake: Intake,
    receiver: Receiver,
    process: Callable[[], Delivered],
    webhook_id: str | None = None,
) -> Response:
    """Run ``process`` and turn its outcome into the answer, the log row and the count."""
    outcome: WebhookOutcome = "processed"
    ignored: tuple[IgnoreReason, ...] = ()
    try:
        try:
            delivered = process()
        except NEVER_SUCCEEDING_ERRORS as exc:
            raise as_ignored(exc) from exc
    except Ignored as exc:
        response = _acknowledge(intake, receiver, exc, webhook_id)
        if response.status_code == 503:  # the log was unreachable: not acknowledged after all
            outcome = "unavailable"
        else:
            outcome, ignored = "ignored", (exc.reason,)
    except Rejected as exc:
        logger.warning("%s refused with %d: %s", receiver.webhook_type, exc.status, exc.reason)
        response = json_error(exc.status, exc.reason)
        outcome = "refused" if exc.status < 500 else "unavailable"
    except OUTAGE_ERRORS as exc:
        response, outcome = _unavailable(intake, receiver, webhook_id, exc), "unavailable"
    else:
        response, ignored = delivered.response, delivered.ignored
        outcome = "processed" if delivered.processed else "ignored"
    count_webhook(
        receiver.provider,
        receiver.webhook_type,
        response.status_code,
        intake.elapsed_ms() / 1000,
        outcome,
        ignored,
    )
    return response


def _acknowledge(
    intake: Intake, receiver: Receiver, ignored: Ignored, webhook_id: str | None
) -> Response:
    """The ack for a notification that can never be processed, logged when authenticated."""
    logger.info("%s %s", receiver.webhook_type, ignored.message)
    if receiver.log_ignored:
        try:
            record(
                intake,
                ignored.store_id,
                ignored.webhook_id or webhook_id,
                receiver.webhook_type,
                receiver.ack_status,
                ignored.message,
                success=False,
            )
        except OUTAGE_ERRORS as exc:  # unlogged: let the sender retry once we are back
            return _unavailable(intake, receiver, webhook_id, exc)
    return Response(status_code=receiver.ack_status)


def _unavailable(
    intake: Intake, receiver: Receiver, webhook_id: str | None, exc: BaseException
) -> Response:
    """503 so the sender redelivers; logged if the log itself is reachable."""
    name = type(exc).__name__
    logger.warning("%s answered 503: %s", receiver.webhook_type, name, exc_info=exc)
    try:
        record(intake, None, webhook_id, receiver.webhook_type, 503, f"unavailable: {name}")
    except OUTAGE_ERRORS:
        logger.error("%s: could not log the 503 either", receiver.webhook_type, exc_info=True)
    return json_error(503, "temporarily unavailable")


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
) -> uuid.UUID:
    """One inbound row in webhook_delivery_log: the status we answered and how long it took.

    Returns the row's id.
    """
    ok = 200 <= status < 300 if success is None else success
    return log_webhook_delivery(
        store_id,
        webhook_id,
        webhook_type,
        ok,
        status,
        error_message,
        intake.elapsed_ms(),
        session=session,
    )


def publish_after_commit(
    planned: Iterable[PlannedSync], sends: Iterable[Callable[[], object]], logged: list[uuid.UUID]
) -> None:
    """Publish what a committed receiver transaction planned: its syncs, then other tasks.

    Should the broker be unreachable, the delivery rows ``logged`` as acknowledged are withdrawn
    before the error propagates (``answer`` logs the 503 instead, and the sender retries); the
    job rows stay queued for the recovery sweep, and their pending markers are withdrawn.
    """
    pending = list(planned)
    try:
        while pending:
            pending[0].publish(lean=True)  # see tasks.sync.requests.publish
            pending.pop(0)
        for send in sends:
            send()
    except BaseException:
        for plan in pending[1:]:
            plan.cancel()  # pending[0] withdrew its own marker
        try:
            with service_session() as session:
                forget_deliveries(session, logged)
        except OUTAGE_ERRORS:
            logger.warning("could not withdraw %d delivery rows", len(logged), exc_info=True)
        raise
