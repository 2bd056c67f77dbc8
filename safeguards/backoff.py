"""Retry delays as a pure function: exponential growth, a ceiling, and full jitter."""

from __future__ import annotations

import random

#: Delay before the first retry, seconds.
DEFAULT_BASE_S = 2.0
#: Growth per attempt.
DEFAULT_FACTOR = 2.0
#: No delay exceeds this, seconds (kept below the broker's visibility timeout).
DEFAULT_MAX_BACKOFF_S = 600.0


def compute_backoff(
    attempt: int,
    *,
    base_s: float = DEFAULT_BASE_S,
    factor: float = DEFAULT_FACTOR,
    max_backoff_s: float = DEFAULT_MAX_BACKOFF_S,
    jitter: bool = True,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): full jitter over base * factor^attempt.

    Full jitter (AWS architecture blog, "Exponential Backoff And Jitter") spreads retries of
    many workers that failed together uniformly over [0, cap], which avoids synchronised waves.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    # min() before the power would overflow for large attempts, so cap the exponent first.
    exponent = min(attempt, 64)
    ceiling = min(max_backoff_s, base_s * factor**exponent)
    if not jitter:
        return ceiling
    return (rng or random).uniform(0.0, ceiling)


def throttle_backoff(
    attempt: int,
    *,
    base_s: float = DEFAULT_BASE_S,
    factor: float = DEFAULT_FACTOR,
    max_backoff_s: float = DEFAULT_MAX_BACKOFF_S,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after the provider throttled attempt ``attempt`` (0-based) in a row.

    "Equal jitter" (same AWS article): uniform over [ceiling / 2, ceiling], so the wait grows
    with each throttle however short the provider's Retry-After is (a 429 answered with
    ``Retry-After: 0`` again and again must not be hammered), and is never near zero.
    """
    ceiling = compute_backoff(
        attempt, base_s=base_s, factor=factor, max_backoff_s=max_backoff_s, jitter=False
    )
    return (rng or random).uniform(ceiling / 2, ceiling)
