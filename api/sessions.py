"""Dashboard sessions: a login mints a random token; the cookie carries it, the table its hash.

The cookie never holds the API key itself, so logging out (the row is deleted) and revoking
the key (its rows are deleted, and every lookup checks the key is still unrevoked) end a
session on the server, whoever still has the cookie. As with API keys, only the SHA-256 is
stored: a 256-bit random token cannot be guessed, however fast the hash (see ``api.api_keys``).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select

from api.api_keys import Principal, hash_key
from models import ApiKey, DashboardSession
from syncguard.db import service_session

__all__ = ["SESSION_MARK", "end_session", "open_session", "session_principal"]

#: Marks a string as a dashboard session token (and makes a leaked one easy to grep for).
SESSION_MARK = "sgs_"
#: Random bytes in a session token.
TOKEN_BYTES = 32


def open_session(principal: Principal, lifetime_s: int) -> str:
    """A new session of ``principal`` lasting ``lifetime_s`` seconds; returns its token.

    Sessions already expired (anyone's) are deleted on the way, so the table stays small.
    """
    token = SESSION_MARK + secrets.token_urlsafe(TOKEN_BYTES)
    now = datetime.now(UTC)
    with service_session() as session:
        session.execute(delete(DashboardSession).where(DashboardSession.expires_at <= now))
        session.add(
            DashboardSession(
                business_id=principal.business_id,
                api_key_id=principal.key_id,
                token_hash=hash_key(token),
                expires_at=now + timedelta(seconds=lifetime_s),
            )
        )
    return token


def session_principal(token: str) -> Principal | None:
    """The principal of a live session (unexpired, its key unrevoked), else None."""
    # Looked up by the token's hash: timing reveals nothing about a token an attacker lacks.
    with service_session() as session:
        key = session.scalars(
            select(ApiKey)
            .join(DashboardSession, DashboardSession.api_key_id == ApiKey.id)
            .where(
                DashboardSession.token_hash == hash_key(token),
                DashboardSession.expires_at > datetime.now(UTC),
                ApiKey.revoked_at.is_(None),
            )
        ).one_or_none()
        if key is None:
            return None
        return Principal(key.id, key.name, key.role, key.business_id)


def end_session(token: str) -> bool:
    """Delete the session of ``token``; False if there was none."""
    with service_session() as session:
        result = session.execute(
            delete(DashboardSession).where(DashboardSession.token_hash == hash_key(token))
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]
