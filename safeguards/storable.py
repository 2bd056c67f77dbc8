"""Text PostgreSQL can store: NUL and unpaired surrogates replaced, bounded values fitted.

PostgreSQL refuses the NUL character in ``text``/``varchar`` ("text fields cannot contain NUL
(0x00) bytes") and the escape ``\\u0000`` inside ``jsonb`` strings ("unsupported Unicode escape
sequence"; PostgreSQL docs, "JSON Types", 8.14). A Python ``str`` may also hold unpaired UTF-16
surrogates (JSON allows ``"\\ud800"``, RFC 8259 section 8.2), which cannot be encoded as UTF-8 at
all. Providers send both. Every piece of provider-supplied text is passed through these pure
functions on its way to a row, so one bad character never fails a whole write:

- NUL and each unpaired surrogate become U+FFFD REPLACEMENT CHARACTER (a valid pair held as two
  code units is joined into its one character);
- a value longer than its column's bound (``max_chars``, in characters as PostgreSQL counts for
  ``varchar(n)``) keeps its head plus a digest of the whole, so distinct long ids stay distinct
  and the same id always maps to the same stored value (deletes and relabels still find it).

The caller records that a value changed (``storable_fields`` says which); nothing here logs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import psycopg
from sqlalchemy import exc as sa_exc

#: Errors the database (or its driver) raises because of the data itself: the same data fails the
#: same way on every retry, so they are never transient. ``UnicodeEncodeError`` is psycopg refusing
#: an unpaired surrogate before the query leaves the client. Connection and operational errors
#: (``OperationalError``, ``InterfaceError``) are not here: those are transient.
DATA_ERRORS: tuple[type[Exception], ...] = (
    sa_exc.DataError,
    sa_exc.IntegrityError,
    psycopg.DataError,
    psycopg.IntegrityError,
    UnicodeEncodeError,
)
#: What replaces a character PostgreSQL cannot hold.
REPLACEMENT = "\ufffd"
#: Separates the kept head of an over-long value from its digest.
DIGEST_MARK = "~"
#: Hex characters of the SHA-256 digest appended to a fitted value (64 bits: no collisions in
#: practice among one store's ids).
DIGEST_CHARS = 16


def is_storable(value: str, max_chars: int | None = None) -> bool:
    """Whether PostgreSQL stores ``value`` unchanged (in a column of ``max_chars``, if bounded)."""
    if max_chars is not None and len(value) > max_chars:
        return False
    if "\x00" in value:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable_text(value: str, max_chars: int | None = None) -> str:
    """``value`` made storable; unchanged when it already is (see the module docstring).

    ``max_chars`` must leave room for the digest (more than ``DIGEST_CHARS + 1``).
    """
    if is_storable(value, max_chars):
        return value
    cleaned = _encodable(value).replace("\x00", REPLACEMENT)
    if max_chars is not None and len(cleaned) > max_chars:
        if max_chars <= DIGEST_CHARS + 1:
            raise ValueError(f"max_chars={max_chars} leaves no room for the digest")
        digest = hashlib.sha256(cleaned.encode("utf-8")).hexdigest()[:DIGEST_CHARS]
        cleaned = f"{cleaned[: max_chars - DIGEST_CHARS - 1]}{DIGEST_MARK}{digest}"
    return cleaned


def storable_optional(value: str | None, max_chars: int | None = None) -> str | None:
    """``storable_text`` that lets None through."""
    return None if value is None else storable_text(value, max_chars)


def storable_json(value: Any) -> Any:
    """A copy of a JSON-shaped value whose every string (keys included) is storable in jsonb."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, Mapping):
        return {storable_json(str(k)): storable_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable_json(item) for item in value]
    return value


def storable_fields(row: Mapping[str, Any], bounds: Mapping[str, int | None]) -> list[str]:
    """The names in ``bounds`` whose value in ``row`` is text (or text items) not yet storable."""
    changed = []
    for name, max_chars in bounds.items():
        value = row.get(name)
        items = value if isinstance(value, list | tuple) else [value]
        if any(isinstance(v, str) and not is_storable(v, max_chars) for v in items):
            changed.append(name)
    return changed


def data_error_kind(exc: BaseException) -> str:
    """The class name of a data error's driver exception (``NumericValueOutOfRange``, ...)."""
    return type(getattr(exc, "orig", None) or exc).__name__


def data_error_reason(exc: BaseException, max_chars: int = 500) -> str:
    """The database's own message of a data error, first line only, without parameters.

    SQLAlchemy's ``str()`` appends the statement and its parameters: the provider's content.
    """
    lines = str(getattr(exc, "orig", None) or exc).splitlines()
    return storable_text(lines[0][:max_chars] if lines else "")


def _encodable(value: str) -> str:
    # UTF-16 with surrogatepass rebuilds split pairs; decoding with "replace" turns each unpaired
    # surrogate into U+FFFD. Only reached for text that is not already valid.
    return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


__all__ = [
    "DATA_ERRORS",
    "DIGEST_CHARS",
    "REPLACEMENT",
    "data_error_kind",
    "data_error_reason",
    "is_storable",
    "storable_fields",
    "storable_json",
    "storable_optional",
    "storable_text",
]
