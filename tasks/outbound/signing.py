"""Standard Webhooks signatures (https://www.standardwebhooks.com): sign, verify, new secrets.

Pure functions, no I/O. A secret is ``whsec_`` + base64 of the key bytes; the signature of one
delivery is ``v1,`` + base64 HMAC-SHA256 of ``"{msg_id}.{timestamp}.{body}"`` with that key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

#: Prefix of every signing secret.
SECRET_PREFIX = "whsec_"
#: Key bytes of a secret new_secret() makes (Svix uses 24; the spec asks for 24 to 64).
SECRET_BYTES = 24
#: Version tag of the symmetric HMAC-SHA256 scheme.
SIGNATURE_VERSION = "v1"
#: How far a signed timestamp may be from now, past or future, seconds.
DEFAULT_TOLERANCE_S = 300

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


class WebhookVerificationError(ValueError):
    """A delivery whose headers, timestamp or signature do not check out."""


def new_secret() -> str:
    """A fresh random signing secret, ``whsec_<base64>``."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The key bytes of ``secret``; ValueError if it is not ``whsec_<base64>``."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error:
        raise ValueError("a webhook secret is whsec_ followed by base64") from None
    if not key:
        raise ValueError("a webhook secret's key is empty")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of one delivery."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def signature_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of one delivery."""
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, msg_id, timestamp, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Check a delivery's signature and timestamp; WebhookVerificationError says what is wrong."""
    lowered = {name.lower(): value for name, value in headers.items()}
    missing = [h for h in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER) if not lowered.get(h)]
    if missing:
        raise WebhookVerificationError(f"missing header(s): {', '.join(missing)}")
    msg_id, raw_timestamp = lowered[ID_HEADER], lowered[TIMESTAMP_HEADER]
    try:
        timestamp = int(raw_timestamp)
    except ValueError:
        raise WebhookVerificationError(f"{TIMESTAMP_HEADER} is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise WebhookVerificationError(
            f"{TIMESTAMP_HEADER} is {current - timestamp:+.0f}s from now "
            f"(tolerance {tolerance_s:g}s): too old or too new"
        )
    expected = sign(secret, msg_id, timestamp, body).encode()
    # Several signatures (key rotation) may be sent, space-separated; any v1 match is enough.
    # Compare every candidate, never stop early, so timing reveals nothing about which matched.
    matched = False
    for candidate in lowered[SIGNATURE_HEADER].split():
        matched |= hmac.compare_digest(candidate.encode(), expected)
    if not matched:
        raise WebhookVerificationError("no signature matches (wrong secret or altered body)")
