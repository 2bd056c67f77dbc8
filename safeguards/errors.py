"""One error hierarchy: a safeguard *refusing* a call is another family than a call *failing*."""

from __future__ import annotations

from models.enums import FailureCategory


class SafeguardError(Exception):
    """Root of every error the safeguards raise."""


class SafeguardUnavailable(SafeguardError):
    """The safeguards' shared state (Redis) could not be reached; wraps the driver error."""


class Refused(SafeguardError):
    """A safeguard declined the call; try again after ``retry_after_s``. Never a failure."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = max(0.0, retry_after_s)


class RateLimited(Refused):
    """The limiter's windows, concurrency leases or a provider throttle have no room now."""


class CircuitOpen(Refused):
    """The circuit is open (or its half-open trials are taken)."""


class CallFailure(SafeguardError):
    """A provider call failed; subclasses say how the task side must react."""

    #: What the archive records if this failure ends the job.
    category: FailureCategory = FailureCategory.UNKNOWN

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        #: The provider's own wait (its Retry-After, on any status), seconds; None without one.
        #: The task side waits at least this long and throttles the store's limiter for it.
        self.retry_after_s = retry_after_s


class TransientFailure(CallFailure):
    """Timeouts, 5xx, dropped connections: counted by the breaker, retried with backoff."""

    category = FailureCategory.TRANSIENT_EXHAUSTED


class ThrottledFailure(CallFailure):
    """The provider itself throttled us (429 / quota 403): fed back to the limiter, deferred."""

    category = FailureCategory.THROTTLED_TOO_LONG


class PermanentFailure(CallFailure):
    """Retrying cannot help; the job goes to the archive at once."""


class AuthenticationFailure(PermanentFailure):
    """401 or a revoked grant: the store needs re-authorisation."""

    category = FailureCategory.AUTHENTICATION


class ValidationFailure(PermanentFailure):
    """The request or the task's arguments are invalid."""

    category = FailureCategory.VALIDATION


class CursorLost(PermanentFailure):
    """The provider no longer knows our sync cursor: a full resync is needed."""

    category = FailureCategory.CURSOR_LOST


class DeadLetterError(SafeguardError):
    """An operation on the dead-letter archive could not be carried out."""


class ArchiveEntryNotFound(DeadLetterError, LookupError):
    """No dead-letter entry has the given id."""


class ReplayRefused(DeadLetterError):
    """The entry was already replayed or discarded, or another operator is replaying it now."""
