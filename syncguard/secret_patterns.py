"""What a secret looks like in free text: the one set of patterns every scrubber applies.

Two scrubbers use them: the log record scrubber (``syncguard.logging_config``: every log line
and span of every process) and the redaction of what the safeguards persist
(``safeguards.redaction``: archive rows, delivery logs). Both mask the *token shapes* below
wherever they stand; the log scrubber also masks every URL query value, the redaction also
masks the value of a secret-named key (``password=...``, ``"token": "..."``).

Shapes and their sources:

- ``Bearer`` credentials (RFC 6750, section 2.1) and ``Basic`` ones (RFC 7617: base64);
- JSON Web Tokens: three base64url segments, the header starting ``eyJ`` (``{"`` encoded,
  RFC 7519, section 3);
- Fernet tokens: base64url of version byte 0x80 and a 64-bit timestamp, so ``gAAAAA``
  (cryptography's Fernet spec, "Token Format");
- Standard Webhooks signing secrets, ``whsec_`` + base64 (standardwebhooks.com, "Signing");
- Google OAuth access tokens (``ya29.``) and refresh tokens (``1//``) (Google Identity,
  "Using OAuth 2.0 to Access Google APIs", token formats as issued);
- syncguard's own API keys and dashboard session tokens (``sgk_``, ``sgs_``);
- the password of a URL's userinfo (``scheme://user:password@host``, RFC 3986, 3.2.1).

Every quantifier is bounded (or possessive), so a long hostile input stays linear time.
"""

from __future__ import annotations

import re

__all__ = [
    "QUERY_VALUE_RULE",
    "REDACTED",
    "TOKEN_RULES",
    "Rule",
    "apply_rules",
    "is_secret_key",
    "mask_secret_values",
]

#: What a secret is replaced with.
REDACTED = "[REDACTED]"

#: A pattern and what its matches become (``re.sub`` replacement syntax).
Rule = tuple[re.Pattern[str], str]

#: Token-shaped secrets, in order: a Bearer credential is masked whole before a later rule could
#: stop at its scheme word.
TOKEN_RULES: tuple[Rule, ...] = (
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
    # Keys and session tokens wherever they stand: glued to a word (``k_sgk_…``) or behind an
    # encoded "=" (``%3Dsgk_…``), where a word boundary would not be.
    (re.compile(r"(sg[ks]_)[A-Za-z0-9_-]{6,}"), rf"\1{REDACTED}"),
    (
        re.compile(r"(\b[a-z][a-z0-9+.-]{0,30}://[^:/@\s]{0,256}):[^@/\s]{1,256}@", re.I),
        rf"\1:{REDACTED}@",
    ),
)

#: Every URL query value: after "?" or "&", a name, "=", then the value up to the next
#: separator; the separators may arrive percent-encoded (%3F, %26, %3D) in a path a client
#: escaped. A query string may carry a credential under any name, so no value is kept.
QUERY_VALUE_RULE: Rule = (
    re.compile(r"((?:[?&]|%3[Ff]|%26)[^=&?#%\s\"'<>]{1,200}(?:=|%3[Dd]))[^&#\s\"'<>]*"),
    rf"\1{REDACTED}",
)

# Key names (lower-cased, "-" read as "_") whose value is a secret, whatever its type.
_SECRET_KEY = re.compile(
    r"passw(or)?d|pwd|secret|token|authori[sz]ation|api_?key|client_?state|credential"
    r"|cookie|private_?key|signing_?key|session_?id|(^|_)auth($|_)|dsn"
)
# Keys that match the pattern above but hold cursors or metadata a replay needs.
_NOT_SECRET_KEYS = frozenset(
    {"page_token", "next_page_token", "sync_token", "delta_token", "skip_token", "token_type"}
)
# "key = value" in free text. Quantifiers are bounded and keys start at a word start, so a long
# input stays linear time.
_KEY_VALUE = re.compile(
    r"(?<![\w-])(?P<key>[\w-]{0,40}?(?:passw(?:or)?d|secret|token|api[_-]?key|client[_-]?state"
    r"|authori[sz]ation|cookie|credentials?)[\w-]{0,40})"
    r"(?P<sep>[\"']?\s*[=:]\s*[\"']?)(?P<value>(?:(?:Basic|Bearer|Digest)\s+)?(?:\[REDACTED\]|[^\s&\"',;}\][]+))",
    re.I,
)


def apply_rules(text: str, rules: tuple[Rule, ...]) -> str:
    """``text`` with every rule's matches replaced, the rules applied in order."""
    for pattern, replacement in rules:
        text = pattern.sub(replacement, text)
    return text


def is_secret_key(key: object) -> bool:
    """Whether a mapping key names a secret (case-insensitive; cursors like page_token are not)."""
    normalized = str(key).lower().replace("-", "_")
    return normalized not in _NOT_SECRET_KEYS and _SECRET_KEY.search(normalized) is not None


def mask_secret_values(text: str) -> str:
    """``text`` with the value of every secret-named key (``password=x``, ``"token": "x"``)
    masked; cursors such as ``page_token`` are kept (see ``is_secret_key``)."""
    return _KEY_VALUE.sub(_mask_value, text)


def _mask_value(match: re.Match[str]) -> str:
    if not is_secret_key(match["key"]) or match["value"] == REDACTED:
        return match[0]
    return f"{match['key']}{match['sep']}{REDACTED}"
