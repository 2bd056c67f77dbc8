"""The distributed rate limiter: what a limit is (``limits``), the decision (``limiter``, Lua in
``check.lua``), its reply (``reply``) and its PostgreSQL side (``store``)."""

from safeguards.rate_limit.limiter import (
    RateLimiter,
    check_rate_limit,
    flush_usage_to_postgres,
    get_rate_limiter,
    record_rate_limit_request,
)
from safeguards.rate_limit.limits import LimitOverrides, RateLimits

__all__ = [
    "LimitOverrides",
    "RateLimiter",
    "RateLimits",
    "check_rate_limit",
    "flush_usage_to_postgres",
    "get_rate_limiter",
    "record_rate_limit_request",
]
