"""What a rate limit is: the windows, provider defaults and operation costs (pure, no I/O).

Windows are *bucketed sliding windows*. A window of length W with bucket width b keeps, per
bucket j (the hits at integer milliseconds jb .. (j+1)b-1), the summed cost, and counts a
bucket **whole** as long as any of its milliseconds lies inside the window. With b = 1 ms
this is an exact sliding log; wider buckets trade a little admission (at most b of W early)
for memory bounded by W / b entries instead of one entry per request.

Guarantee: no window of length W, anywhere in time, ever holds more than its limit. Proof:
take any such window and the last hit admitted into it, at effective time t. Effective times
never decrease (the script clamps them per key), so every other hit in the window was admitted
earlier, at a time in (t - W, t]; each lies in a bucket overlapping (t - W, t], all of which
were counted when the hit at t was admitted, and that admission required count + cost <= limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any

from models.enums import Provider
from safeguards.errors import RateLimited


@dataclass(frozen=True)
class Window:
    """One sliding window: its name, length and bucket width, in milliseconds."""

    name: str
    length_ms: int
    bucket_ms: int


#: The minute window: 1 ms buckets, i.e. an exact sliding log.
MINUTE = Window("minute", 60_000, 1)
#: The hour window: 10 s buckets (at most 360 per store; admits at most 10 s of 3,600 late).
HOUR = Window("hour", 3_600_000, 10_000)
#: The day window: 5 min buckets (at most 288 per store).
DAY = Window("day", 86_400_000, 300_000)
#: Every window, in the order the script checks them.
WINDOWS = (MINUTE, HOUR, DAY)


#: The RateLimits field holding each window's limit (read per decision: no dict per call).
_LIMIT_OF = {"minute": "per_minute", "hour": "per_hour", "day": "per_day"}


@dataclass(frozen=True)
class LimitOverrides:
    """A store's overrides from its ``provider_rate_limits`` '*' row; None keeps the default."""

    per_minute: int | None = None
    per_hour: int | None = None
    per_day: int | None = None
    concurrency: int | None = None


@dataclass(frozen=True)
class RateLimits:
    """Limits in cost units per window, and the number of calls in flight at once."""

    per_minute: int
    per_hour: int
    per_day: int
    concurrency: int

    def for_window(self, window: Window) -> int:
        """The limit of ``window``."""
        limit: int = getattr(self, _LIMIT_OF[window.name])
        return limit

    def with_overrides(self, overrides: LimitOverrides) -> RateLimits:
        """These limits with every value the store overrides replaced."""
        return RateLimits(
            per_minute=_pick(overrides.per_minute, self.per_minute),
            per_hour=_pick(overrides.per_hour, self.per_hour),
            per_day=_pick(overrides.per_day, self.per_day),
            concurrency=_pick(overrides.concurrency, self.concurrency),
        )


def _pick(override: int | None, default: int) -> int:
    return default if override is None else override


@dataclass(frozen=True)
class OperationCost:
    """What each operation costs against the shared per-store quota."""

    default: int
    costs: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def of(self, operation_type: str) -> int:
        """The cost of ``operation_type`` (the default for operations not listed)."""
        return self.costs.get(operation_type, self.default)


#: Gmail per-user quota units per operation (Gmail API usage limits, new-project table).
GMAIL_COSTS = OperationCost(
    default=5,
    costs=MappingProxyType(
        {
            "messages.get": 20,
            "messages.attachments.get": 20,
            "messages.list": 5,
            "history.list": 2,
            "watch": 100,
            "stop": 50,
        }
    ),
)
#: Graph throttles by request count: every request costs 1.
OUTLOOK_COSTS = OperationCost(default=1)

#: Gmail defaults, quota units: below the 6,000 units/min per-user quota; 10 calls in flight.
GMAIL_LIMITS = RateLimits(per_minute=5_000, per_hour=250_000, per_day=4_000_000, concurrency=10)
#: Outlook defaults, requests: 10 minutes hold at most 9,000 < Graph's 10,000; Graph allows 4
#: concurrent requests per mailbox.
OUTLOOK_LIMITS = RateLimits(per_minute=900, per_hour=9_000, per_day=150_000, concurrency=4)

#: The default limits of each provider.
PROVIDER_LIMITS: Mapping[Provider, RateLimits] = MappingProxyType(
    {Provider.GMAIL: GMAIL_LIMITS, Provider.OUTLOOK: OUTLOOK_LIMITS}
)
#: The operation costs of each provider.
PROVIDER_COSTS: Mapping[Provider, OperationCost] = MappingProxyType(
    {Provider.GMAIL: GMAIL_COSTS, Provider.OUTLOOK: OUTLOOK_COSTS}
)

#: First backoff of a throttle without Retry-After, seconds; doubles with each strike.
THROTTLE_BASE_S = 1.0
#: Longest backoff of a throttle without Retry-After, seconds.
THROTTLE_CAP_S = 300.0
#: Seconds without a throttle after which the strike count starts again at one.
THROTTLE_QUIET_S = 600.0


@dataclass(frozen=True)
class WindowUsage:
    """One window's limit and use, in cost units."""

    name: str
    limit: int
    used: int
    remaining: int


@dataclass(frozen=True)
class RateLimitDecision:
    """Whether a call may go ahead now, and if not, after how many seconds."""

    allowed: bool
    retry_after_s: float
    reason: str | None
    windows: tuple[WindowUsage, ...]
    throttled_until: float | None
    lease_id: str | None
    store_id: str
    provider: Provider
    operation_type: str
    cost: int

    def as_dict(self) -> dict[str, Any]:
        """The decision as JSON-ready detail (the seed's JSONB)."""
        return asdict(self) | {"provider": self.provider.value}

    def raise_if_refused(self) -> None:
        """Raise RateLimited unless the call is allowed."""
        if not self.allowed:
            raise RateLimited(f"rate limited: {self.reason}", self.retry_after_s)


@dataclass(frozen=True)
class RateLimitUsage:
    """A store's live usage as Redis holds it now."""

    store_id: str
    provider: Provider
    windows: tuple[WindowUsage, ...]
    throttled_until: float | None
    leases_in_use: int
    concurrency: int
    denied_count: int
    success_count: int
    failure_count: int
    last_request_at: float | None
