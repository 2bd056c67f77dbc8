"""OAuth session: refresh, on_refresh, one retry on 401, transport failures, the call guard."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from providers.errors import ProviderAuthError, ProviderUnavailable
from providers.gmail import classify
from providers.oauth import OAuthCredentials, OAuthSession
from tests.providers import Reply, Seen, scripted_server

CREDS = OAuthCredentials("client-id", "client-secret-xyz", "refresh-secret-xyz")


def session(url: str, creds: OAuthCredentials = CREDS, **kwargs: object) -> OAuthSession:
    return OAuthSession(
        creds, provider="gmail", token_url=f"{url}/token", classify=classify, **kwargs
    )  # type: ignore[arg-type]


def test_repr_hides_every_secret() -> None:
    creds = OAuthCredentials(
        "client-id", "client-secret-xyz", "refresh-secret-xyz", access_token="access-secret-xyz"
    )
    for text in (repr(creds), str(creds), f"{creds}"):
        assert "secret-xyz" not in text
        assert "client-id" in text


def test_refresh_on_first_use_then_reuse_and_on_refresh_persists() -> None:
    persisted: list[OAuthCredentials] = []
    with scripted_server() as server:

        def handler(seen: Seen) -> Reply:
            if seen.path == "/token":
                return Reply(200, {"access_token": "at-1", "expires_in": 3600})
            return Reply(200, {"ok": seen.headers["Authorization"]})

        server.handler = handler
        s = session(server.url, on_refresh=persisted.append)

        first = s.request("messages.list", 5, "GET", f"{server.url}/api").json()
        second = s.request("messages.list", 5, "GET", f"{server.url}/api").json()

    assert first == second == {"ok": "Bearer at-1"}
    assert server.paths() == ["/token", "/api", "/api"]
    form = server.requests[0].form()
    assert form == {
        "grant_type": "refresh_token",
        "refresh_token": "refresh-secret-xyz",
        "client_id": "client-id",
        "client_secret": "client-secret-xyz",
    }
    [saved] = persisted
    assert saved.access_token == "at-1" and saved.refresh_token == "refresh-secret-xyz"
    assert saved.expires_at is not None
    assert saved.expires_at > datetime.now(UTC) + timedelta(seconds=3500)


def test_expired_token_is_refreshed_ahead_of_the_call() -> None:
    stale = OAuthCredentials(
        "c", "s", "r", access_token="old", expires_at=datetime.now(UTC) + timedelta(seconds=10)
    )
    with scripted_server() as server:
        server.handler = lambda seen: (
            Reply(200, {"access_token": "fresh", "expires_in": 60})
            if seen.path == "/token"
            else Reply(200, {"auth": seen.headers["Authorization"]})
        )
        body = session(server.url, stale).request("x", 1, "GET", f"{server.url}/api").json()
    assert body == {"auth": "Bearer fresh"}


def test_401_refreshes_once_then_retries() -> None:
    creds = OAuthCredentials("c", "s", "r", access_token="revoked-at")
    with scripted_server() as server:

        def handler(seen: Seen) -> Reply:
            if seen.path == "/token":
                return Reply(200, {"access_token": "new-at", "expires_in": 3600})
            if seen.headers["Authorization"] == "Bearer new-at":
                return Reply(200, {"ok": True})
            return Reply(401, {"error": {"code": 401, "message": "Invalid Credentials"}})

        server.handler = handler
        assert session(server.url, creds).request("x", 1, "GET", f"{server.url}/api").json()
    assert server.paths() == ["/api", "/token", "/api"]


def test_401_after_refresh_is_an_auth_error() -> None:
    creds = OAuthCredentials("c", "s", "r", access_token="at")
    with scripted_server() as server:
        server.handler = lambda seen: (
            Reply(200, {"access_token": "still-bad", "expires_in": 3600})
            if seen.path == "/token"
            else Reply(401, {"error": {"code": 401}})
        )
        with pytest.raises(ProviderAuthError) as info:
            session(server.url, creds).request("x", 1, "GET", f"{server.url}/api")
    assert info.value.status == 401
    assert server.paths() == ["/api", "/token", "/api"]  # exactly one refresh
    assert "still-bad" not in str(info.value)


def test_invalid_grant_is_an_auth_error_without_secrets() -> None:
    with scripted_server() as server:
        server.handler = lambda seen: Reply(
            400, {"error": "invalid_grant", "error_description": "Token has been revoked."}
        )
        with pytest.raises(ProviderAuthError) as info:
            session(server.url).request("x", 1, "GET", f"{server.url}/api")
    assert info.value.code == "invalid_grant" and info.value.provider == "oauth"
    assert "secret-xyz" not in str(info.value)
    assert server.paths() == ["/token"]


def test_timeout_and_refused_connection_are_unavailable() -> None:
    creds = OAuthCredentials("c", "s", "r", access_token="at")
    with scripted_server() as server:
        server.handler = lambda seen: Reply(200, {}, delay_s=1.0)
        with pytest.raises(ProviderUnavailable, match="timed out") as info:
            session(server.url, creds, timeout=httpx.Timeout(0.2)).request(
                "messages.get", 20, "GET", f"{server.url}/slow"
            )
        assert info.value.status is None
        dead = server.url
    with pytest.raises(ProviderUnavailable):
        session(dead, creds).request("messages.get", 20, "GET", f"{dead}/gone")


def test_call_guard_is_entered_around_every_request_with_name_and_cost() -> None:
    events: list[tuple[str, str, int]] = []

    @contextmanager
    def guard(operation: str, cost: int) -> Iterator[None]:
        events.append(("enter", operation, cost))
        try:
            yield
        except Exception as exc:
            events.append(("failed", type(exc).__name__, cost))
            raise
        events.append(("exit", operation, cost))

    creds = OAuthCredentials("c", "s", "r", access_token="at")
    with scripted_server() as server:
        server.handler = lambda seen: (
            Reply(200, {"access_token": "t2", "expires_in": 3600})
            if seen.path == "/token"
            else Reply(401, {})
            if seen.headers["Authorization"] == "Bearer at"
            else Reply(503, {"error": {"code": 503, "message": "backend"}})
        )
        with pytest.raises(ProviderUnavailable):
            session(server.url, creds, call_guard=guard).request(
                "history.list", 2, "GET", f"{server.url}/api"
            )
    assert events == [
        ("enter", "history.list", 2),
        ("exit", "history.list", 2),
        ("enter", "oauth.token", 0),
        ("exit", "oauth.token", 0),
        ("enter", "history.list", 2),
        ("failed", "ProviderUnavailable", 2),
    ]
