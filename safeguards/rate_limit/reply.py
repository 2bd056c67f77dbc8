"""The reply of ``lua/rate_limit_check.lua``, decoded into the limiter's value types.

The script answers with one flat array; its layout is known here and nowhere else in Python:
0 allowed, 1 retry after (ms), 2 reason, 3-5 minute/hour/day used, 6 leases in use,
7 throttled until (ms), 8 first touch since a flush, 9 denied, 10 denied since the last flush,
11 last request (ms), 12 successes, 13 failures, 14 now (ms).
"""

from __future__ import annotations

from typing import Any

from models.enums import Provider
from safeguards.rate_limit.limits import WINDOWS, RateLimits, RateLimitUsage, WindowUsage

__all__ = ["epoch_s", "flush_row", "throttled_until", "usage", "windows"]


def epoch_s(ms: int) -> float | None:
    """Epoch milliseconds as epoch seconds; None for 0 (never)."""
    return ms / 1000 if ms else None


def throttled_until(raw: list[Any]) -> float | None:
    """The epoch second a provider throttle ends, or None if none is in force."""
    return epoch_s(int(raw[7])) if int(raw[7]) > int(raw[14]) else None


def windows(limits: RateLimits, raw: list[Any]) -> tuple[WindowUsage, ...]:
    """Each window's limit, use and room."""
    return tuple(
        WindowUsage(
            w.name, limits.for_window(w), int(used), max(0, limits.for_window(w) - int(used))
        )
        for w, used in zip(WINDOWS, raw[3:6], strict=True)
    )


def usage(sid: str, prov: Provider, limits: RateLimits, raw: list[Any]) -> RateLimitUsage:
    """The store's live usage, from a "peek" reply."""
    return RateLimitUsage(
        store_id=sid,
        provider=prov,
        windows=windows(limits, raw),
        throttled_until=throttled_until(raw),
        leases_in_use=int(raw[6]),
        concurrency=limits.concurrency,
        denied_count=int(raw[9]),
        success_count=int(raw[12]),
        failure_count=int(raw[13]),
        last_request_at=epoch_s(int(raw[11])),
    )


def flush_row(sid: str, raw: list[Any]) -> dict[str, Any]:
    """The row ``rate_limit_store.upsert_usage`` writes for the store, from a "flush" reply."""
    return {
        "store_id": sid,
        "minute": int(raw[3]),
        "hour": int(raw[4]),
        "day": int(raw[5]),
        "denied": int(raw[10]),
        "throttled_until": throttled_until(raw),
        "last_request_at": epoch_s(int(raw[11])),
    }
