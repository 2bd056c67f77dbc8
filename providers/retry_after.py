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
# The day name that opens an IMF-fixdate ("Sun") or an RFC 850 date ("Sunday").
_DAY_NAME = re.compile(
    r"Mon|Tue|Wed|Thu|Fri|Sat|Sun|(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day", re.ASCII
)


def parse_retry_after(
    value: str | None, now: float, *, max_s: float = MAX_RETRY_AFTER_S
) -> float | None:
    """Seconds to wait from ``now`` (epoch seconds), capped at ``max_s``; None when unusable.

    Accepts delay-seconds (``"20"``, Graph's ``"2.5"``) and an HTTP-date in any of RFC 9110's
    three forms (IMF-fixdate, RFC 850, asctime; a date without a zone is GMT, §5.6.7). A date
    in the past means 0. Several values (two header lines, which httpx joins as ``"20, 30"``,
    RFC 9110 §5.3) give the longest usable wait. Absent, empty, negative, non-finite or
    unparseable values give None, so the caller falls back to its own backoff; nothing raises.
    """
    if value is None:
        return None
    text = value.strip()
    waits = [w for part in _values(text) if (w := _one(part, now)) is not None]
    seconds = max(waits, default=None)
    return None if seconds is None else min(max(seconds, 0.0), max_s)


def _one(text: str, now: float) -> float | None:
    """One Retry-After value in seconds (uncapped), or None when it is not one."""
    if not text:
        return None
    # An absurdly long digit string gives inf, which the caller's cap turns into max_s.
    return float(text) if _DELAY.fullmatch(text) else _seconds_until(text, now)


def _values(text: str) -> list[str]:
    """The values of a comma-joined header; an HTTP-date's own comma (after its day name, as in
    ``Sun, 06 Nov 1994 08:49:37 GMT``) does not split it."""
    pieces = [piece.strip() for piece in text.split(",")]
    values: list[str] = []
    for piece in pieces:
        if values and _DAY_NAME.fullmatch(values[-1]):
            values[-1] = f"{values[-1]}, {piece}"
        else:
            values.append(piece)
    return values


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
