"""Secret scrubbing for everything the safeguards persist: archive rows, delivery logs."""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Mapping
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

#: What a secret is replaced with.
REDACTED = "[REDACTED]"
#: What replaces a structure nested deeper than ``MAX_DEPTH`` (no real job nests that far).
TRUNCATED = "[TRUNCATED]"
#: Nesting depth, in containers, below which values are no longer walked.
MAX_DEPTH = 32

# Key names (lower-cased, "-" read as "_") whose value is a secret, whatever its type.
_SECRET_KEY = re.compile(
    r"passw(or)?d|pwd|secret|token|authori[sz]ation|api_?key|client_?state|credential"
    r"|cookie|private_?key|signing_?key|session_?id|(^|_)auth($|_)|dsn"
)
# Keys that match the pattern above but hold cursors or metadata a replay needs.
_NOT_SECRET_KEYS = frozenset(
    {"page_token", "next_page_token", "sync_token", "delta_token", "skip_token", "token_type"}
)

# Secret-shaped substrings of free text, each with its replacement; the order matters (a
# bearer header is masked before the "key: value" rule could stop at the scheme word).
_TEXT_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b((?i:bearer))\s+[A-Za-z0-9\-._~+/]{6,}=*"), rf"\1 {REDACTED}"),
    # Basic credentials are base64 with a digit, "+", "/" or padding; plain prose is left alone.
    (
        re.compile(r"\b(Basic)\s+(?=[A-Za-z0-9+/]*[0-9+/=])[A-Za-z0-9+/]{6,}={0,2}"),
        rf"\1 {REDACTED}",
    ),
    # JWT segments are bounded and possessive so a long run of "eyJ-..." cannot backtrack.
    (re.compile(r"\beyJ[\w-]{4,1024}+\.[\w-]{4,16384}+\.[\w-]{0,1024}+"), REDACTED),
    (re.compile(r"\bgAAAAA[A-Za-z0-9_-]{20,}={0,2}"), REDACTED),  # Fernet tokens
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=_-]+"), REDACTED),  # Standard Webhooks secrets
    (re.compile(r"\bya29\.[A-Za-z0-9_.-]+"), REDACTED),  # Google OAuth access tokens
    (re.compile(r"\b1//[A-Za-z0-9_-]{10,}"), REDACTED),  # Google OAuth refresh tokens
    (
        re.compile(r"(\b[a-z][a-z0-9+.-]{0,30}://[^:/@\s]{0,256}):[^@/\s]{1,256}@", re.I),
        rf"\1:{REDACTED}@",
    ),
)
# Quantifiers are bounded and keys start at a word start, so a long input stays linear time.
_KEY_VALUE = re.compile(
    r"(?<![\w-])(?P<key>[\w-]{0,40}?(?:passw(?:or)?d|secret|token|api[_-]?key|client[_-]?state"
    r"|authori[sz]ation|cookie|credentials?)[\w-]{0,40})"
    r"(?P<sep>[\"']?\s*[=:]\s*[\"']?)(?P<value>(?:(?:Basic|Bearer|Digest)\s+)?(?:\[REDACTED\]|[^\s&\"',;}\][]+))",
    re.I,
)


def is_secret_key(key: object) -> bool:
    """Whether a mapping key names a secret (case-insensitive; cursors like page_token are not)."""
    normalized = str(key).lower().replace("-", "_")
    return normalized not in _NOT_SECRET_KEYS and _SECRET_KEY.search(normalized) is not None


def redact_text(text: str) -> str:
    """``text`` with bearer tokens, JWTs, Fernet tokens, whsec_ secrets and key=secret masked."""
    for pattern, replacement in _TEXT_RULES:
        text = pattern.sub(replacement, text)
    return _KEY_VALUE.sub(_mask_value, text)


def _mask_value(match: re.Match[str]) -> str:
    if not is_secret_key(match["key"]) or match["value"] == REDACTED:
        return match[0]
    return f"{match['key']}{match['sep']}{REDACTED}"


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
