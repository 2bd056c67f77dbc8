"""Gmail adapter against the emulator over real HTTP: listing, history, watch, errors, guard."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from providers.emulator.runner import EmulatorHandle, running_emulator
from providers.errors import (
    CursorExpired,
    ProviderAuthError,
    ProviderRequestError,
    ProviderThrottled,
    ProviderUnavailable,
)
from providers.gmail import GmailClient
from providers.oauth import OAuthCredentials
from tests.providers import Mailbox, Reply, scripted_server


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


def gmail(box: Mailbox, **kwargs: Any) -> GmailClient:
    return GmailClient(
        box.credentials, base_url=box.url, token_url=f"{box.url}/oauth2/token", **kwargs
    )


@pytest.fixture
def box(emulator: EmulatorHandle, request: pytest.FixtureRequest) -> Mailbox:
    return Mailbox(emulator, "gmail", f"{request.node.name[:40]}@gmail.test")


def test_full_listing_pages_then_history_picks_up_every_change(box: Mailbox) -> None:
    ids = [box.add(f"m{i}", sender="alice@example.com") for i in range(5)]
    client = gmail(box, page_size=2)

    pages, token = [], None
    while True:
        page = client.list_page(token)
        pages.append(page)
        if page.next_page_token is None:
            break
        assert page.cursor is None
        token = page.next_page_token
    listed = {m.provider_message_id: m for p in pages for m in p.messages}
    assert [len(p.messages) for p in pages] == [2, 2, 1]
    assert set(listed) == set(ids)
    first = listed[ids[0]]
    assert first.subject == "m0" and first.sender == "alice@example.com"
    assert isinstance(first.received_at, datetime) and first.received_at.tzinfo == UTC
    assert "INBOX" in first.labels and first.version
    cursor = pages[-1].cursor
    assert cursor is not None

    new_id = box.add("later")
    box.control.delete(f"/mailboxes/{box.address}/messages/{ids[1]}").raise_for_status()
    box.post(f"messages/{ids[2]}/labels", json={"add": ["STARRED"], "remove": ["UNREAD"]})

    upserts, deleted, labels, final = drain(client, cursor)
    assert upserts == [new_id]
    assert deleted == [ids[1]]
    assert set(labels) == {(ids[2], ("STARRED",), ()), (ids[2], (), ("UNREAD",))}
    assert drain(client, final)[:3] == ([], [], [])


def drain(client: GmailClient, cursor: str) -> tuple[list[str], list[str], list[Any], str]:
    """Every change since ``cursor`` across pages, and the final cursor."""
    upserts: list[str] = []
    deleted: list[str] = []
    labels: list[Any] = []
    token = None
    while True:
        page = client.changes_page(cursor, token)
        upserts += [m.provider_message_id for m in page.upserts]
        deleted += page.deleted_ids
        labels += [(c.provider_message_id, c.added, c.removed) for c in page.label_changes]
        if page.next_page_token is None:
            assert page.cursor is not None
            return upserts, deleted, labels, page.cursor
        assert page.cursor is None
        token = page.next_page_token


def test_history_pages_and_added_then_deleted_counts_as_deleted(box: Mailbox) -> None:
    client = gmail(box, page_size=1)
    cursor = client.current_cursor()
    kept = box.add("kept")
    gone = box.add("gone")
    box.control.delete(f"/mailboxes/{box.address}/messages/{gone}").raise_for_status()

    upserts, deleted, _, _ = drain(client, cursor)
    assert upserts == [kept] and gone in deleted


def test_stale_history_id_is_cursor_expired(box: Mailbox) -> None:
    client = gmail(box)
    cursor = client.current_cursor()
    box.add("x")
    box.post("expire-history")
    with pytest.raises(CursorExpired) as info:
        client.changes_page(cursor)
    assert info.value.status == 404


@pytest.mark.parametrize(
    "reason", ["userRateLimitExceeded", "rateLimitExceeded", "dailyLimitExceeded"]
)
def test_quota_403_is_throttled(box: Mailbox, reason: str) -> None:
    client = gmail(box)
    client.current_cursor()  # token fetched before the fault
    box.faults(quota_403={"reason": reason})
    with pytest.raises(ProviderThrottled) as info:
        client.list_page()
    assert (info.value.status, info.value.code) == (403, reason)


def test_insufficient_permissions_403_is_permanent(box: Mailbox) -> None:
    client = gmail(box)
    client.current_cursor()
    box.faults(quota_403={"reason": "insufficientPermissions"})
    with pytest.raises(ProviderRequestError) as info:
        client.list_page()
    assert not isinstance(info.value, ProviderThrottled)
    assert (info.value.status, info.value.code) == (403, "insufficientPermissions")


def test_429_is_throttled_with_retry_after(box: Mailbox) -> None:
    client = gmail(box)
    client.current_cursor()
    box.faults(throttle_429={"retry_after": 7})
    with pytest.raises(ProviderThrottled) as info:
        client.current_cursor()
    assert info.value.status == 429 and info.value.retry_after_s == 7.0


def test_5xx_and_timeout_are_unavailable(box: Mailbox) -> None:
    client = gmail(box, timeout=httpx.Timeout(0.5))
    client.current_cursor()
    box.faults(server_error={"status": 502})
    with pytest.raises(ProviderUnavailable) as info:
        client.current_cursor()
    assert info.value.status == 502
    box.faults(timeout={"seconds": 2})
    with pytest.raises(ProviderUnavailable, match="timed out"):
        client.current_cursor()


def test_revoked_grant_is_an_auth_error(box: Mailbox) -> None:
    client = gmail(box)
    client.current_cursor()
    box.post("revoke")
    with pytest.raises(ProviderAuthError):
        client.current_cursor()


def test_expired_access_token_is_refreshed_and_persisted(box: Mailbox) -> None:
    saved: list[OAuthCredentials] = []
    client = gmail(box, on_refresh=saved.append)
    client.current_cursor()
    box.post("expire-tokens")
    client.current_cursor()
    assert len(saved) == 2 and saved[0].access_token != saved[1].access_token


def test_watch_and_stop(box: Mailbox) -> None:
    client = gmail(box)
    watch = client.watch("projects/p/topics/gmail", label_ids=["INBOX"])
    assert watch.provider == "gmail" and watch.history_id
    assert watch.expires_at > datetime.now(UTC)
    assert box.control.get(f"/mailboxes/{box.address}").json()["watch"]["label_ids"] == ["INBOX"]
    client.stop()
    assert box.control.get(f"/mailboxes/{box.address}").json()["watch"] is None


def test_call_guard_sees_each_request_and_a_batch_with_its_summed_cost(box: Mailbox) -> None:
    box.add("a")
    box.add("b")
    calls: list[tuple[str, int]] = []

    @contextmanager
    def guard(operation: str, cost: int) -> Iterator[None]:
        calls.append((operation, cost))
        yield

    client = gmail(box, call_guard=guard, costs={"messages.get": 5})
    client.list_page()
    client.watch("projects/p/topics/t")
    client.stop()
    assert calls == [
        ("oauth.token", 0),
        ("getProfile", 1),
        ("messages.list", 5),
        ("messages.get", 10),  # one batch of two calls: their summed cost
        ("watch", 100),
        ("stop", 50),
    ]
    with pytest.raises(ValueError, match="unknown operations"):
        gmail(box, costs={"messages.send": 100})


def test_unknown_403_body_without_json_is_a_request_error() -> None:
    creds = OAuthCredentials("c", "s", "r", access_token="at")
    with scripted_server() as server:
        server.handler = lambda seen: Reply(403, None)
        client = GmailClient(creds, base_url=server.url, token_url=f"{server.url}/token")
        with pytest.raises(ProviderRequestError) as info:
            client.current_cursor()
    assert info.value.status == 403 and server.paths() == ["/gmail/v1/users/me/profile"]
