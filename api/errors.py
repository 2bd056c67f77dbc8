"""What an inbound request can end in besides success: a rejection (4xx) or an outage (503)."""

from __future__ import annotations

import uuid

import kombu.exceptions
import redis
import sqlalchemy.exc
from jwt import PyJWKClientConnectionError

from safeguards.errors import SafeguardUnavailable

#: Failures of what we depend on (database, broker, Redis, Google's JWKS): answer 503 so the
#: provider redelivers. Anything else the sender can cause is a Rejected, never a 5xx.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    redis.ConnectionError,
    redis.TimeoutError,
    kombu.exceptions.OperationalError,
    SafeguardUnavailable,
    PyJWKClientConnectionError,
)


class Rejected(Exception):
    """The request is refused with ``status`` and a fixed ``reason`` (never echoing input)."""

    def __init__(
        self,
        status: int,
        reason: str,
        *,
        store_id: uuid.UUID | None = None,
        webhook_id: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.store_id = store_id
        self.webhook_id = webhook_id
