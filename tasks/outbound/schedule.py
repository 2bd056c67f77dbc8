"""When an outbound delivery is tried again: the retry schedule, Retry-After, and split waits.

Pure functions of their arguments, tested without a broker.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Sequence

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


def parse_retry_after(value: str | None, now: float) -> float | None:
    """A Retry-After header (delta seconds or an HTTP date) as seconds from ``now``, or None."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None  # unparseable: the schedule decides
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        return None
    seconds = when.timestamp() - now
    return max(0.0, seconds) if math.isfinite(seconds) else None


def countdown_s(not_before: float, now: float, max_backoff_s: float) -> float:
    """The countdown of the next leg of a wait until ``not_before``: at most ``max_backoff_s``."""
    return min(max(not_before - now, MIN_COUNTDOWN_S), float(max_backoff_s))
