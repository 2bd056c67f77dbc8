"""Dashboard login: by POST only, into a server-side session that logout and key revocation end."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import Engine, select, text, update

from api.api_keys import create_key, revoke_key
from models import DashboardSession
from syncguard.db import service_session
from syncguard.settings import get_settings

COOKIE = get_settings().dashboard_cookie_name


def log_in(client: httpx.Client, key: str) -> str:
    """POST the login form; returns the session cookie's value."""
    response = client.post("/dashboard/login", data={"key": key})
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/dashboard"
    token = response.cookies.get(COOKIE)
    assert token
    return token


def as_cookie(client: httpx.Client, token: str, path: str) -> httpx.Response:
    """GET ``path`` presenting ``token`` as the session cookie, as a replaying client would."""
    return client.get(path, headers={"Cookie": f"{COOKIE}={token}"})


def sessions_of(key_id: uuid.UUID) -> list[DashboardSession]:
    """The stored sessions of one API key."""
    with service_session() as session:
        stmt = select(DashboardSession).where(DashboardSession.api_key_id == key_id)
        return list(session.scalars(stmt))


@pytest.fixture
def operator(engine: Engine) -> tuple[uuid.UUID, str]:
    """A fresh operator key: (id, plaintext)."""
    return create_key(None, f"operator {uuid.uuid4().hex[:6]}")


def test_the_cookie_is_a_session_token_stored_only_as_its_hash(
    client: httpx.Client, operator: tuple[uuid.UUID, str]
) -> None:
    key_id, key = operator
    response = client.post("/dashboard/login", data={"key": key})
    token = response.cookies[COOKIE]
    set_cookie = response.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=strict" in set_cookie
    assert token != key and key not in response.headers["set-cookie"]
    [row] = sessions_of(key_id)
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    with service_session() as session:
        dumped = session.execute(
            text("SELECT row_to_json(s)::text FROM dashboard_sessions s WHERE id = :id"),
            {"id": row.id},
        ).scalar_one()
    assert token not in dumped and key not in dumped
    assert as_cookie(client, token, "/api/v1/status").status_code == 200


def test_logout_ends_the_session_even_for_a_replayed_cookie(
    client: httpx.Client, operator: tuple[uuid.UUID, str]
) -> None:
    key_id, key = operator
    token = log_in(client, key)
    assert as_cookie(client, token, "/dashboard").status_code == 200

    response = client.post("/dashboard/logout", headers={"Cookie": f"{COOKIE}={token}"})

    assert response.status_code == 303 and response.headers["location"] == "/dashboard/login"
    assert sessions_of(key_id) == []
    assert as_cookie(client, token, "/api/v1/status").status_code == 401
    page = as_cookie(client, token, "/dashboard")
    assert page.status_code == 303 and page.headers["location"] == "/dashboard/login"
    # The key itself still works: logging out ends one session, not the key.
    assert client.get("/api/v1/status", headers={"Authorization": f"Bearer {key}"}).is_success


def test_revoking_the_key_ends_its_sessions(
    client: httpx.Client, operator: tuple[uuid.UUID, str]
) -> None:
    key_id, key = operator
    first, second = log_in(client, key), log_in(client, key)
    assert len(sessions_of(key_id)) == 2

    assert revoke_key(key_id)

    assert sessions_of(key_id) == []
    for token in (first, second):
        assert as_cookie(client, token, "/api/v1/status").status_code == 401


def test_a_session_whose_key_was_revoked_behind_its_back_is_refused(
    client: httpx.Client, operator: tuple[uuid.UUID, str]
) -> None:
    # A revocation written by other means (SQL, another tool) still ends the session at once.
    key_id, key = operator
    token = log_in(client, key)
    with service_session() as session:
        session.execute(
            text("UPDATE api_keys SET revoked_at = now() WHERE id = :id"), {"id": key_id}
        )
    assert as_cookie(client, token, "/api/v1/status").status_code == 401


def test_an_expired_session_is_refused(
    client: httpx.Client, operator: tuple[uuid.UUID, str]
) -> None:
    key_id, key = operator
    token = log_in(client, key)
    with service_session() as session:
        session.execute(
            update(DashboardSession)
            .where(DashboardSession.api_key_id == key_id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert as_cookie(client, token, "/api/v1/status").status_code == 401


def test_a_raw_api_key_in_the_cookie_is_not_a_session(
    client: httpx.Client, operator: tuple[uuid.UUID, str]
) -> None:
    # The cookie used to carry the key itself; such a cookie must no longer log anyone in.
    assert as_cookie(client, operator[1], "/api/v1/status").status_code == 401


def test_a_key_in_the_login_url_is_refused_and_opens_no_session(
    client: httpx.Client, operator: tuple[uuid.UUID, str]
) -> None:
    key_id, key = operator
    response = client.get("/dashboard/login", params={"key": key})
    assert response.status_code == 400
    assert "not accepted in links" in response.text and key not in response.text
    assert COOKIE not in response.headers.get("set-cookie", "")
    assert response.headers["referrer-policy"] == "no-referrer"
    assert sessions_of(key_id) == []
    assert client.get("/dashboard/login").status_code == 200


def test_a_login_post_with_the_key_also_in_its_url_is_refused(
    client: httpx.Client, operator: tuple[uuid.UUID, str]
) -> None:
    # Found by review: the form was accepted though the same key travelled in the URL
    key_id, key = operator
    response = client.post("/dashboard/login", params={"key": key}, data={"key": key})
    assert response.status_code == 400 and "not accepted in links" in response.text
    assert COOKIE not in response.headers.get("set-cookie", "")
    assert sessions_of(key_id) == []


@pytest.mark.parametrize(
    "typed",
    ["a\x00b", "sgk_\x00abc", "sgk_\x01abcdef", "sgk_abc\x7f", "x" * 201, "", "   "],
    ids=["nul", "nul-after-mark", "soh", "del", "too-long", "empty", "blank"],
)
def test_the_login_form_refuses_what_cannot_be_a_key_with_a_400(
    client: httpx.Client, typed: str
) -> None:
    response = client.post("/dashboard/login", data={"key": typed})
    assert response.status_code == 400, response.text
    assert COOKIE not in response.headers.get("set-cookie", "")


def test_the_login_form_refuses_an_unknown_key_with_a_401(client: httpx.Client) -> None:
    response = client.post("/dashboard/login", content=b"key=sgk_no-such-key-at-all")
    assert response.status_code == 401 and "invalid or revoked" in response.text
