"""What an inbound request can end in besides success: a rejection (4xx) or an outage (503)."""

from __future__ import annotations

import logging
import traceback
import uuid

import kombu.exceptions
import redis
import sqlalchemy.exc
from jwt import PyJWKClientConnectionError

from safeguards.errors import SafeguardUnavailable

#: Raised when a request value reached the driver that it or PostgreSQL cannot take (NUL in
#: text, a lone surrogate, a number out of range). ``api.params`` validates inputs before any
#: query; these only catch what a future parameter forgot, and answer 400 rather than 500.
BAD_VALUE_ERRORS: tuple[type[Exception], ...] = (
    sqlalchemy.exc.DataError,
    UnicodeEncodeError,
)

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


def log_redacted(
    logger: logging.Logger, level: int, message: str, exc: BaseException, *args: object
) -> None:
    """Log ``message`` with ``exc``'s type, SQLSTATE and stack, never the exception's text.

    An exception's text can quote the request's values: SQLAlchemy appends the bound
    ``[parameters: ...]``, PostgreSQL quotes rejected input, ``UnicodeEncodeError`` holds the
    whole string. Those values may be secrets (a mistyped API key), so only the frames (file,
    line, function, source line) and the type are logged.
    """
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    kind = type(exc).__qualname__ + (f" (SQLSTATE {sqlstate})" if sqlstate else "")
    frames = "".join(traceback.format_tb(exc.__traceback__)).rstrip()
    logger.log(level, message + ": %s\n%s", *args, kind, frames)
