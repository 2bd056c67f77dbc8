"""The replies of ``check.lua`` and ``throttle.lua``, decoded into named tuples.

Each script answers with one flat array; its layout is known here and nowhere else in Python
(``decode_check``, ``decode_throttle``). Every other reader takes fields by name.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from models.enums import Provider
from safeguards.rate_limit.limits import WINDOWS, RateLimits, RateLimitUsage, WindowUsage

__all__ = [
    "CheckReply",
    "ThrottleReply",
    "decode_check",
    "decode_throttle",
    "epoch_s",
    "flush_row",
    "throttled_until",
    "usage",
    "windows",
]


class CheckReply(NamedTuple):
    """One run of ``check.lua``: the decision and the store's counters (times in epoch ms)."""

    allowed: bool
    retry_after_ms: int
    #: Why the call was refused (``"minute"``, ``"throttled"``, ...); None when allowed.
    reason: str | None
    #: Units used in each window, in ``WINDOWS`` order (minute, hour, day).
    used: tuple[int, int, int]
    leases_in_use: int
    #: When the provider throttle ends; in the past (or 0) when none is in force.
    throttled_until_ms: int
    #: The store's first touch since its last flush: it must be announced for the next one.
    first_touch: bool
    denied: int
    denied_since_flush: int
    #: 0 when the store never made a request.
    last_request_ms: int
    successes: int
    failures: int
    #: The script's effective clock (never behind the store's last one).
    now_ms: int


class ThrottleReply(NamedTuple):
    """One run of ``throttle.lua`` (times in epoch ms)."""

    blocked_until_ms: int
    #: Throttles in a row without a quiet period between them.
    strikes: int
    first_touch: bool


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def decode_check(raw: list[Any]) -> CheckReply:
    """Name the fields of ``check.lua``'s 15-item reply; ValueError when it has another length."""
    (allowed, retry_after, reason, minute, hour, day, leases, until, first_touch, denied,
     denied_since_flush, last_request, successes, failures, now) = raw  # fmt: skip
    return CheckReply(
        allowed=bool(allowed),
        retry_after_ms=int(retry_after),
        reason=_text(reason) or None,
        used=(int(minute), int(hour), int(day)),
        leases_in_use=int(leases),
        throttled_until_ms=int(until),
        first_touch=bool(first_touch),
        denied=int(denied),
        denied_since_flush=int(denied_since_flush),
        last_request_ms=int(last_request),
        successes=int(successes),
        failures=int(failures),
        now_ms=int(now),
    )


def decode_throttle(raw: list[Any]) -> ThrottleReply:
    """Name the fields of ``throttle.lua``'s 3-item reply."""
    blocked_until, strikes, first_touch = raw
    return ThrottleReply(int(blocked_until), int(strikes), bool(first_touch))


def epoch_s(ms: int) -> float | None:
    """Epoch milliseconds as epoch seconds; None for 0 (never)."""
    return ms / 1000 if ms else None


def throttled_until(reply: CheckReply) -> float | None:
    """The epoch second a provider throttle ends, or None if none is in force."""
    in_force = reply.throttled_until_ms > reply.now_ms
    return epoch_s(reply.throttled_until_ms) if in_force else None


def windows(limits: RateLimits, reply: CheckReply) -> tuple[WindowUsage, ...]:
    """Each window's limit, use and room."""
    return tuple(
        WindowUsage(w.name, limits.for_window(w), used, max(0, limits.for_window(w) - used))
        for w, used in zip(WINDOWS, reply.used, strict=True)
    )


def usage(sid: str, prov: Provider, limits: RateLimits, reply: CheckReply) -> RateLimitUsage:
    """The store's live usage, from a "peek" reply."""
    return RateLimitUsage(
        store_id=sid,
        provider=prov,
        windows=windows(limits, reply),
        throttled_until=throttled_until(reply),
        leases_in_use=reply.leases_in_use,
        concurrency=limits.concurrency,
        denied_count=reply.denied,
        success_count=reply.successes,
        failure_count=reply.failures,
        last_request_at=epoch_s(reply.last_request_ms),
    )


def flush_row(sid: str, reply: CheckReply) -> dict[str, Any]:
    """The row ``store.upsert_usage`` writes for the store, from a "flush" reply."""
    minute, hour, day = reply.used
    return {
        "store_id": sid,
        "minute": minute,
        "hour": hour,
        "day": day,
        "denied": reply.denied_since_flush,
        "throttled_until": throttled_until(reply),
        "last_request_at": epoch_s(reply.last_request_ms),
    }
