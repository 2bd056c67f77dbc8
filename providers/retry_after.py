"""The one parser of ``Retry-After`` (RFC 9110 §10.2.3), shared by the adapters and outbound.

A pure function of the header and a clock reading, so it is tested without HTTP. It lives in
``providers`` because the adapters may import nothing outside their package, and ``tasks``
(outbound delivery) may import ``providers``.
"""

from __future__ import annotations

import math
import re
from datetime import UTC
from email.utils import parsedate_to_datetime

__all__ = ["MAX_RETRY_AFTER_S", "parse_retry_after"]

#: Longest wait a Retry-After may ask for, seconds. Gmail's longest quota (the daily one)
#: resets within a day, so a longer hint is a bug; it is capped, not obeyed.
MAX_RETRY_AFTER_S = 86_400.0

# RFC 9110 delay-seconds is 1*DIGIT; Graph documents fractional seconds, so a decimal part
# is accepted too. ASCII digits only: str.isdigit() would admit "²" or Arabic-Indic digits.
_DELAY = re.compile(r"[0-9]+(?:\.[0-9]+)?", re.ASCII)


def parse_retry_after(
    value: str | None, now: float, *, max_s: float = MAX_RETRY_AFTER_S
) -> float | None:
    """Seconds to wait from ``now`` (epoch seconds), capped at ``max_s``; None when unusable.

    Accepts delay-seconds (``"20"``, Graph's ``"2.5"``) and an HTTP-date in any of RFC 9110's
    three forms (IMF-fixdate, RFC 850, asctime; a date without a zone is GMT, §5.6.7). A date
    in the past means 0. Absent, empty, negative, non-finite or unparseable values give None,
    so the caller falls back to its own backoff; nothing raises.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    # An absurdly long digit string gives inf, which the cap below turns into max_s.
    seconds = float(text) if _DELAY.fullmatch(text) else _seconds_until(text, now)
    return None if seconds is None else min(max(seconds, 0.0), max_s)


def _seconds_until(text: str, now: float) -> float | None:
    """Seconds from ``now`` to an HTTP-date, or None when ``text`` is not one."""
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime and "-0000" carry no zone; HTTP dates are GMT
        when = when.replace(tzinfo=UTC)
    seconds = when.timestamp() - now
    return seconds if math.isfinite(seconds) else None
