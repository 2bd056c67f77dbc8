"""Validated request values: every string, moment and bound an API parameter can carry.

Each type here is checked by pydantic before a handler runs, so a value that PostgreSQL or
Python cannot take never reaches SQL: a refusal is a 422 naming the parameter, never a 500.

- PostgreSQL ``text`` cannot hold NUL (U+0000): "PostgreSQL text fields cannot contain NUL
  (0x00) bytes" (psycopg raises ``DataError``; PostgreSQL docs, "Character Types").
- A lone surrogate (U+D800..U+DFFF, which JSON's ``"\\ud800"`` escape can produce) has no UTF-8
  encoding (Unicode 15, section 3.9), so the driver cannot send it.
- Other control characters (Unicode category Cc) are never part of an identifier, a filter or
  a name; a free-text note may keep tab and line breaks.
- Moments are limited to years 1900..8999 so the arithmetic around them (a default window
  subtracted, a time zone removed) stays inside Python's ``datetime`` range.

Error messages name the offending character's code point and position, never the value: the
value may be a mistyped secret.

A listing's window (``since``, ``until``, ``limit``) is checked once, by the ``Listing``
dependency, for every list endpoint: a limit outside 1..``api_max_list_limit`` or a ``since``
not before ``until`` is a 400 saying so.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from pydantic import AfterValidator, StringConstraints

from api.auth import settings_of

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_NAME_CHARS",
    "MAX_NOTE_CHARS",
    "Listing",
    "ListingWindow",
    "Moment",
    "NameText",
    "NoteText",
    "check_limit",
    "check_order",
    "storable_line",
    "storable_text",
    "utc_moment",
]

#: Longest identifier-like value (a metric name, a job type, a key), characters.
MAX_NAME_CHARS = 200
#: Longest free-text note (a review or discard note), characters.
MAX_NOTE_CHARS = 4000
#: Control characters a multi-line note may contain.
NOTE_WHITESPACE = frozenset("\t\n\r")
#: Rows a listing returns when the request names no ``limit``.
DEFAULT_LIMIT = 100
#: Earliest and latest moment a parameter may name.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def _check(value: str, allowed: frozenset[str]) -> str:
    for position, char in enumerate(value):
        if char in allowed:
            continue
        category = unicodedata.category(char)
        if category == "Cs":
            raise ValueError(f"lone surrogate U+{ord(char):04X} at position {position}")
        if category == "Cc":
            raise ValueError(f"control character U+{ord(char):04X} at position {position}")
    return value


def storable_line(value: str) -> str:
    """``value`` unchanged; ValueError if it holds a control character or a lone surrogate."""
    return _check(value, frozenset())


def storable_text(value: str) -> str:
    """Like :func:`storable_line`, but tab, CR and LF are allowed (multi-line text)."""
    return _check(value, NOTE_WHITESPACE)


def utc_moment(value: datetime) -> datetime:
    """``value`` in UTC (naive is taken as UTC); ValueError outside years 1900..8999."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        value = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the moment is outside the supported range (1900..8999)") from None
    if not EARLIEST <= value < LATEST:
        raise ValueError("the moment is outside the supported range (1900..8999)")
    return value


#: One line of text: a name, a type, a filter value (1..MAX_NAME_CHARS characters).
NameText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_NAME_CHARS),
    AfterValidator(storable_line),
]
#: Free text up to MAX_NOTE_CHARS characters, line breaks allowed.
NoteText = Annotated[
    str, StringConstraints(max_length=MAX_NOTE_CHARS), AfterValidator(storable_text)
]
#: A moment in UTC within EARLIEST..LATEST (ISO 8601; naive means UTC).
Moment = Annotated[datetime, AfterValidator(utc_moment)]


def check_limit(request: Request, limit: int) -> int:
    """``limit`` if it is within 1..api_max_list_limit; else HTTPException 400 saying the range."""
    ceiling = settings_of(request).api_max_list_limit
    if not 1 <= limit <= ceiling:
        raise HTTPException(400, f"limit must be between 1 and {ceiling}, not {limit}")
    return limit


def check_order(since: datetime | None, until: datetime | None) -> None:
    """HTTPException 400 unless ``since`` is before ``until`` (either may be open: None)."""
    if since is not None and until is not None and since >= until:
        raise HTTPException(400, "since must be earlier than until")


@dataclass(frozen=True)
class ListingWindow:
    """Which rows a listing returns: created in ``since``..``until`` (UTC, either open: None),
    newest ``limit`` first."""

    since: datetime | None
    until: datetime | None
    limit: int


def listing_window(
    request: Request,
    since: Moment | None = None,
    until: Moment | None = None,
    limit: int = DEFAULT_LIMIT,
) -> ListingWindow:
    """The ``since``, ``until`` and ``limit`` query parameters, checked (see the module doc)."""
    check_order(since, until)
    return ListingWindow(since, until, check_limit(request, limit))


#: A list endpoint's ``?since=&until=&limit=``, checked once for every listing.
Listing = Annotated[ListingWindow, Depends(listing_window)]
