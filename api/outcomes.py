"""What an inbound notification ends in besides success: ignored (acknowledged), never retried.

The receivers have four outcomes, each with one answer:

- processed: acted on (a sync requested, a lifecycle task published) and acknowledged;
- ignored: the notification can never be processed — an authenticated sender's unparseable
  payload, a mailbox or subscription we do not (or no longer) serve, a paused store. It is
  *acknowledged* anyway, because any other status makes the sender redeliver the same
  notification for hours (Graph) or days (Pub/Sub) with the same result; it is logged with
  ``success = false`` and ``error_message = "ignored (<reason>): <detail>"``, counted, and
  enqueues nothing;
- refused (``api.errors.Rejected``): the sender is not authenticated (Gmail's 401/403) or a
  synchronous handshake is malformed (Graph's 400). Not written to the delivery log, so an
  unauthenticated sender can neither learn anything nor fill the log; counted and logged;
- unavailable (``api.errors.OUTAGE_ERRORS``): our own outage, answered 503 so the sender retries.
"""

from __future__ import annotations

import enum
import uuid

import sqlalchemy.exc

from safeguards.errors import ValidationFailure


class IgnoreReason(enum.StrEnum):
    """Why a notification was acknowledged without processing (a Prometheus label value)."""

    #: The body or payload can never be parsed (bad JSON/base64, missing or mistyped fields,
    #: too large, a value the database cannot hold).
    MALFORMED = "malformed"
    #: No Gmail store has the notification's address (never connected, or deleted).
    UNKNOWN_MAILBOX = "unknown_mailbox"
    #: The store exists but is not active (paused, disabled, needs reauthorization) or vanished
    #: between lookup and enqueue.
    STORE_INACTIVE = "store_inactive"
    #: Graph: the item names no subscription we hold, or its clientState does not match —
    #: Graph's only proof of origin, so these items are not written to the delivery log.
    UNVERIFIED = "unverified"
    #: Graph: a lifecycle notification with an event we do not know.
    UNKNOWN_EVENT = "unknown_event"


class Ignored(Exception):
    """The notification can never be processed: acknowledge, log (if authenticated) and count."""

    def __init__(
        self,
        reason: IgnoreReason,
        detail: str,
        *,
        store_id: uuid.UUID | None = None,
        webhook_id: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.reason = reason
        #: A fixed text (never echoing input) saying what exactly was wrong.
        self.detail = detail
        self.store_id = store_id
        self.webhook_id = webhook_id

    @property
    def message(self) -> str:
        """The delivery log's ``error_message``: ``ignored (<reason>): <detail>``."""
        return f"ignored ({self.reason}): {self.detail}"


#: Errors the notification's own data causes deeper down, which no retry can cure: a value
#: PostgreSQL or its driver refuses (``DataError``, a lone surrogate's ``UnicodeEncodeError``),
#: a store that vanished or was paused between our lookup and the enqueue (``ValidationFailure``
#: from ``tasks.sync.jobs.create_job``).
NEVER_SUCCEEDING_ERRORS: tuple[type[Exception], ...] = (
    sqlalchemy.exc.DataError,
    UnicodeEncodeError,
    ValidationFailure,
)


def as_ignored(exc: Exception) -> Ignored:
    """The Ignored outcome of one of ``NEVER_SUCCEEDING_ERRORS`` (fixed detail, no input)."""
    if isinstance(exc, ValidationFailure):
        # StoreNotSyncable names its (existing) store; a store that vanished is named by none.
        store_id = getattr(exc, "store_id", None)
        return Ignored(IgnoreReason.STORE_INACTIVE, "store cannot be synced", store_id=store_id)
    return Ignored(IgnoreReason.MALFORMED, "a value cannot be stored")
