"""Per-mailbox fault switches and request/delivery counters (pure; the caller holds the lock)."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: A fault's remaining uses: a number, or "always".
Count = int | Literal["always"]
QuotaReason = Literal[
    "userRateLimitExceeded", "rateLimitExceeded", "dailyLimitExceeded", "insufficientPermissions"
]
#: A Retry-After to send: seconds, or the header's raw text (an HTTP-date, or garbage to test
#: a client's tolerance); None sends no header.
RetryAfter = float | str | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Throttle(_Strict):
    """Answer 429 (Gmail RESOURCE_EXHAUSTED, Graph TooManyRequests) with Retry-After."""

    count: Count = 1
    retry_after: RetryAfter = 1.0


class Quota(_Strict):
    """Answer 403 with the given reason (insufficientPermissions is the permanent kind)."""

    reason: QuotaReason = "userRateLimitExceeded"
    count: Count = 1
    retry_after: RetryAfter = None


class ServerError(_Strict):
    """Answer a 5xx, with a Retry-After when given (Graph sends one on 503)."""

    status: int = Field(default=503, ge=500, le=599)
    count: Count = 1
    retry_after: RetryAfter = None


class Timeout(_Strict):
    """Sleep `seconds` (longer than the client's timeout) before answering 504."""

    count: Count = 1
    seconds: float | None = None


class CountOnly(_Strict):
    """A fault that only has a number of uses."""

    count: Count = 1


class Drop(_Strict):
    """Drop notifications: the next `count`, or each with `probability`."""

    count: Count | None = None
    probability: float | None = Field(default=None, ge=0.0, le=1.0)


class Faults(_Strict):
    """Every fault switch of one mailbox; PUT replaces the whole set."""

    throttle_429: Throttle | None = None
    quota_403: Quota | None = None
    server_error: ServerError | None = None
    #: The same, answered by the OAuth token endpoint to this mailbox's refresh grant.
    token_error: ServerError | None = None
    timeout: Timeout | None = None
    slow_ms: int = Field(default=0, ge=0)
    stale_cursor: CountOnly | None = None
    drop_notifications: Drop | None = None
    duplicate_notifications: bool = False


@dataclass(frozen=True)
class RequestFault:
    """What to do to one API request: delay, then at most one failure."""

    slow_ms: int = 0
    timeout_s: float | None = None
    throttled: bool = False
    quota_reason: str | None = None
    server_status: int | None = None
    #: The Retry-After header's text, None for no header.
    retry_after: str | None = None

    def headers(self) -> dict[str, str]:
        """The failure's extra response headers."""
        return {} if self.retry_after is None else {"Retry-After": self.retry_after}


def retry_after_header(value: RetryAfter) -> str | None:
    """The header text of a configured Retry-After: whole seconds print without ".0"."""
    if value is None or isinstance(value, str):
        return value
    return str(int(value)) if value == int(value) else str(value)


def _take(count: Count) -> tuple[bool, Count]:
    """Consume one use of a counted fault; returns (applies, remaining)."""
    if count == "always":
        return True, count
    if count <= 0:
        return False, 0
    return True, count - 1


def take_request_fault(faults: Faults, default_timeout_s: float) -> RequestFault:
    """Decide (and consume) the fault for one API request, in a fixed order."""
    slow = faults.slow_ms
    if faults.timeout is not None:
        hit, faults.timeout.count = _take(faults.timeout.count)
        if hit:
            return RequestFault(slow, timeout_s=faults.timeout.seconds or default_timeout_s)
    if faults.throttle_429 is not None:
        hit, faults.throttle_429.count = _take(faults.throttle_429.count)
        if hit:
            header = retry_after_header(faults.throttle_429.retry_after)
            return RequestFault(slow, throttled=True, retry_after=header)
    if faults.quota_403 is not None:
        hit, faults.quota_403.count = _take(faults.quota_403.count)
        if hit:
            header = retry_after_header(faults.quota_403.retry_after)
            return RequestFault(slow, quota_reason=faults.quota_403.reason, retry_after=header)
    if faults.server_error is not None:
        hit, faults.server_error.count = _take(faults.server_error.count)
        if hit:
            return _server_fault(slow, faults.server_error)
    return RequestFault(slow)


def take_token_fault(faults: Faults) -> RequestFault | None:
    """The failure (and consume it) for one token-endpoint request, None to answer normally."""
    if faults.token_error is None:
        return None
    hit, faults.token_error.count = _take(faults.token_error.count)
    return _server_fault(0, faults.token_error) if hit else None


def _server_fault(slow_ms: int, error: ServerError) -> RequestFault:
    header = retry_after_header(error.retry_after)
    return RequestFault(slow_ms, server_status=error.status, retry_after=header)


def take_stale_cursor(faults: Faults) -> bool:
    """Whether this cursor-bearing request must be answered as stale."""
    if faults.stale_cursor is None:
        return False
    hit, faults.stale_cursor.count = _take(faults.stale_cursor.count)
    return hit


def take_drop(faults: Faults, rng: random.Random) -> bool:
    """Whether to drop this notification."""
    drop = faults.drop_notifications
    if drop is None:
        return False
    if drop.count is not None:
        hit, drop.count = _take(drop.count)
        if hit:
            return True
    return drop.probability is not None and rng.random() < drop.probability


@dataclass
class MailboxStats:
    """Counters for one mailbox: requests and statuses per endpoint, notification deliveries."""

    requests: Counter[str] = field(default_factory=Counter)
    responses: dict[str, Counter[str]] = field(default_factory=dict)
    notifications_dropped: int = 0
    deliveries: list[dict[str, object]] = field(default_factory=list)
    #: The request log: one entry per answered API request, {endpoint, status, start, end}
    #: (epoch seconds), so a test can check the calls against a store's rate limits.
    calls: list[dict[str, object]] = field(default_factory=list)

    def record_response(
        self, endpoint: str, status: int, start: float | None = None, end: float | None = None
    ) -> None:
        """Count one answered request (and log it when its times are given)."""
        self.responses.setdefault(endpoint, Counter())[str(status)] += 1
        if start is not None and end is not None:
            self.calls.append({"endpoint": endpoint, "status": status, "start": start, "end": end})

    def as_json(self) -> dict[str, object]:
        """The stats as the control API returns them."""
        return {
            "requests": dict(self.requests),
            "responses": {k: dict(v) for k, v in self.responses.items()},
            "notifications_dropped": self.notifications_dropped,
            "notifications_sent": sum(d["kind"] != "graph_validation" for d in self.deliveries),
            "deliveries": list(self.deliveries),
            "calls": list(self.calls),
        }
