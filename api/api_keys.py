"""API keys: create one (the plaintext is shown once), verify one, revoke one.

A key is ``sgk_`` followed by 32 random bytes (URL-safe base64). Only its SHA-256 is stored. A
fast hash is the right one here: bcrypt and friends slow down guessing *low-entropy passwords*;
a 256-bit random key cannot be guessed however fast the hash, and a slow hash would only add
tens of milliseconds of CPU to every API request.

Run ``python -m api.api_keys create NAME [--business-id UUID]`` to mint a key.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update

from models import ApiKey, ApiKeyRole, DashboardSession
from syncguard.db import service_session

__all__ = ["KEY_PREFIX_CHARS", "Principal", "create_key", "hash_key", "revoke_key", "verify"]

#: Marks a string as a syncguard API key (and makes leaked keys easy to grep for).
KEY_MARK = "sgk_"
#: Random bytes in a key.
KEY_BYTES = 32
#: Characters of the key kept in clear, for display and to find the row.
KEY_PREFIX_CHARS = 12
#: ``last_used_at`` is written at most this often per key, seconds (not one write per request).
LAST_USED_RESOLUTION_S = 60
#: What a key can look like. Anything else (control characters, Latin-1 bytes from a header,
#: kilobytes of junk) is refused before it reaches SQL, from a header, a cookie or a form.
KEY_SHAPE = re.compile(rf"{KEY_MARK}[A-Za-z0-9_-]{{1,100}}")
#: Compared against when no row matches, so a miss costs what a hit costs.
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who a verified key speaks for: one business (tenant) or every business (operator)."""

    key_id: uuid.UUID
    name: str
    role: ApiKeyRole
    business_id: uuid.UUID | None

    @property
    def is_operator(self) -> bool:
        """True for an operator key."""
        return self.role is ApiKeyRole.OPERATOR


def hash_key(plaintext: str) -> str:
    """Hex SHA-256 of a key."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def create_key(business_id: uuid.UUID | None, name: str) -> tuple[uuid.UUID, str]:
    """A new key of ``business_id`` (None: an operator key); returns (id, plaintext)."""
    if not name.strip():
        raise ValueError("an API key needs a name (who holds it)")
    plaintext = KEY_MARK + secrets.token_urlsafe(KEY_BYTES)
    row = ApiKey(
        business_id=business_id,
        name=name.strip(),
        key_prefix=plaintext[:KEY_PREFIX_CHARS],
        key_hash=hash_key(plaintext),
        role=ApiKeyRole.TENANT if business_id is not None else ApiKeyRole.OPERATOR,
    )
    with service_session() as session:
        session.add(row)
        session.flush()
        return row.id, plaintext


def verify(plaintext: str) -> Principal | None:
    """The principal of a valid, unrevoked key, else None; the hash comparison is constant-time."""
    if not KEY_SHAPE.fullmatch(plaintext):
        return None  # the shape is public: refusing it early tells nothing about stored keys
    digest = hash_key(plaintext)
    prefix = plaintext[:KEY_PREFIX_CHARS]
    with service_session() as session:
        candidates = session.scalars(
            select(ApiKey).where(ApiKey.key_prefix == prefix, ApiKey.revoked_at.is_(None))
        ).all()
        match = None
        for row in candidates:
            if hmac.compare_digest(row.key_hash, digest):
                match = row
        if not candidates:
            hmac.compare_digest(_DUMMY_HASH, digest)
        if match is None:
            return None
        _touch(match)
        return Principal(match.id, match.name, match.role, match.business_id)


def _touch(row: ApiKey) -> None:
    """Record that the key was used, at most once per LAST_USED_RESOLUTION_S."""
    now = datetime.now(UTC)
    if row.last_used_at is None or now - row.last_used_at > timedelta(
        seconds=LAST_USED_RESOLUTION_S
    ):
        row.last_used_at = now


def revoke_key(key_id: uuid.UUID) -> bool:
    """Revoke a key and end its dashboard sessions; False if there is no such unrevoked key."""
    with service_session() as session:
        result = session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
        session.execute(delete(DashboardSession).where(DashboardSession.api_key_id == key_id))
        return bool(result.rowcount)  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> None:
    """``create NAME [--business-id UUID]`` prints a new key; ``revoke KEY_ID`` revokes one."""
    parser = argparse.ArgumentParser(prog="python -m api.api_keys")
    verbs = parser.add_subparsers(dest="verb", required=True)
    create = verbs.add_parser("create", help="mint a key (no --business-id: an operator key)")
    create.add_argument("name")
    create.add_argument("--business-id", type=uuid.UUID, default=None)
    revoke = verbs.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id", type=uuid.UUID)
    args = parser.parse_args(argv)
    if args.verb == "create":
        key_id, plaintext = create_key(args.business_id, args.name)
        print(f"key id {key_id}\n{plaintext}\n(shown once: store it now)")
    elif not revoke_key(args.key_id):
        parser.exit(1, f"no unrevoked key {args.key_id}\n")


if __name__ == "__main__":
    main()
