"""The webhook delivery log: one row per attempt, inbound or outbound, secrets removed."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from models import Direction, WebhookDeliveryLog
from safeguards.redaction import redact_text, truncate
from safeguards.storable import storable_optional, storable_text
from syncguard.db import session_or_new

#: Longest error message kept, in characters (a provider's HTML error page is not a message).
MAX_ERROR_MESSAGE_CHARS = 2_000
#: Longest webhook id / webhook type kept, in characters (the columns' widths).
_WEBHOOK_ID_CHARS = 255
_WEBHOOK_TYPE_CHARS = 100


def log_webhook_delivery(
    store_id: uuid.UUID | None,
    webhook_id: str | None,
    webhook_type: str,
    success: bool,
    response_code: int | None,
    error_message: str | None,
    duration_ms: int | None,
    *,
    direction: Direction = Direction.INBOUND,
    attempt: int = 1,
    endpoint_id: uuid.UUID | None = None,
    business_id: uuid.UUID | None = None,
    session: Session | None = None,
) -> uuid.UUID:
    """Record one delivery attempt and return the new row's id."""
    values = delivery_values(
        store_id,
        webhook_id,
        webhook_type,
        success,
        response_code,
        error_message,
        duration_ms,
        direction=direction,
        attempt=attempt,
        endpoint_id=endpoint_id,
        business_id=business_id,
    )
    statement = insert(WebhookDeliveryLog).values(**values).returning(WebhookDeliveryLog.id)
    with session_or_new(session) as s:
        delivery_id: uuid.UUID = s.execute(statement).scalar_one()
    return delivery_id


def delivery_values(
    store_id: uuid.UUID | None,
    webhook_id: str | None,
    webhook_type: str,
    success: bool,
    response_code: int | None,
    error_message: str | None,
    duration_ms: int | None,
    *,
    direction: Direction = Direction.INBOUND,
    attempt: int = 1,
    endpoint_id: uuid.UUID | None = None,
    business_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """The column values of one delivery-log row, secrets removed and texts cut to fit: for a
    caller that writes the row inside a larger statement (the webhook receivers)."""
    return {
        "store_id": store_id,
        "business_id": business_id,
        "endpoint_id": endpoint_id,
        # The webhook id comes from the sender's payload: storable, like every provider text.
        "webhook_id": storable_optional(webhook_id, _WEBHOOK_ID_CHARS),
        "webhook_type": storable_text(webhook_type, _WEBHOOK_TYPE_CHARS),
        "direction": Direction(direction),
        "attempt": attempt,
        "success": success,
        "response_code": response_code,
        "error_message": _clean_error(error_message),
        "duration_ms": None if duration_ms is None else max(0, round(duration_ms)),
    }


def _clean_error(error_message: str | None) -> str | None:
    """The error message with secrets masked, cut to a length a log row should hold."""
    if error_message is None:
        return None
    # Pre-cut well past the limit so a secret straddling the cut still ends up beyond it.
    head = error_message[: 4 * MAX_ERROR_MESSAGE_CHARS]
    return storable_text(truncate(redact_text(head), MAX_ERROR_MESSAGE_CHARS))
