"""Secret scrubbing for everything the safeguards persist: archive rows, delivery logs."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from syncguard.secret_patterns import (
    REDACTED,
    TOKEN_RULES,
    apply_rules,
    is_secret_key,
    mask_secret_values,
)

__all__ = [
    "MAX_DEPTH",
    "REDACTED",
    "TRUNCATED",
    "is_secret_key",
    "redact",
    "redact_text",
    "truncate",
]

#: What replaces a structure nested deeper than ``MAX_DEPTH`` (no real job nests that far).
TRUNCATED = "[TRUNCATED]"
#: Nesting depth, in containers, below which values are no longer walked.
MAX_DEPTH = 32


def redact_text(text: str) -> str:
    """``text`` with token-shaped secrets (bearer, JWT, Fernet, whsec_, Google, sgk_, a URL's
    password: ``syncguard.secret_patterns``) and the values of secret-named keys masked."""
    return mask_secret_values(apply_rules(text, TOKEN_RULES))


def redact(value: Any, *, _depth: int = 0) -> Any:
    """A JSON-safe copy of ``value`` with secret keys and secret-shaped strings masked."""
    if _depth > MAX_DEPTH:
        return TRUNCATED
    if isinstance(value, Mapping):
        return {
            str(k): REDACTED if is_secret_key(k) else redact(v, _depth=_depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(item, _depth=_depth + 1) for item in value]
    return _redact_scalar(value)


def _redact_scalar(value: Any) -> Any:
    # Enums first: a StrEnum is a str, but its value is what JSON should carry.
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return _redact_bytes(bytes(value))
    return redact_text(repr(value))


def _redact_bytes(value: bytes) -> str:
    # Text is kept (and scrubbed); opaque binary is summarised, never encoded into the row.
    try:
        return redact_text(value.decode("utf-8"))
    except UnicodeDecodeError:
        return f"[{len(value)} bytes]"


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, marking the cut."""
    if len(text) <= limit:
        return text
    marker = "…[truncated]"
    return text[: max(0, limit - len(marker))] + marker
