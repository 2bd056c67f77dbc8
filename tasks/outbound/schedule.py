"""When an outbound delivery is tried again: the retry schedule, Retry-After, and split waits.

Pure functions of their arguments, tested without a broker.
"""

from __future__ import annotations

from collections.abc import Sequence

# The one Retry-After parser, shared with the provider adapters; re-exported for delivery.
from providers.retry_after import parse_retry_after

__all__ = ["MIN_COUNTDOWN_S", "countdown_s", "parse_retry_after", "retry_delay_s"]

#: Shortest countdown of a re-publication, seconds: a zero wait must not spin through the broker.
MIN_COUNTDOWN_S = 0.01


def retry_delay_s(
    attempt: int, schedule_s: Sequence[float], retry_after_s: float | None = None
) -> float | None:
    """Seconds before attempt ``attempt + 1`` after attempt ``attempt`` failed; None: exhausted.

    The schedule's entry, or the receiver's Retry-After when that is longer; a Retry-After is
    capped at the schedule's longest wait so a receiver cannot park a delivery for years.
    """
    if attempt < 1:
        raise ValueError(f"attempts count from 1, got {attempt}")
    if attempt > len(schedule_s):
        return None
    delay = float(schedule_s[attempt - 1])
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, max(schedule_s)))
    return delay


def countdown_s(not_before: float, now: float, max_backoff_s: float) -> float:
    """The countdown of the next leg of a wait until ``not_before``: at most ``max_backoff_s``."""
    return min(max(not_before - now, MIN_COUNTDOWN_S), float(max_backoff_s))
