"""Graph adapter against the emulator over real HTTP: delta, subscriptions, errors, guard."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from providers.base import ChangesPage, FullPage
from providers.emulator.config import EmulatorConfig
from providers.emulator.runner import EmulatorHandle, running_emulator
from providers.errors import (
    CursorExpired,
    ProviderRequestError,
    ProviderThrottled,
    ProviderUnavailable,
)
from providers.oauth import OAuthCredentials
from providers.outlook import OutlookClient
from tests.providers import Mailbox, Reply, Seen, scripted_server


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


@pytest.fixture
def box(emulator: EmulatorHandle, request: pytest.FixtureRequest) -> Mailbox:
    return Mailbox(emulator, "outlook", f"{request.node.name[:40]}@outlook.test")


def outlook(box: Mailbox, **kwargs: Any) -> OutlookClient:
    return OutlookClient(
        box.credentials, base_url=box.url, token_url=f"{box.url}/oauth2/v2.0/token", **kwargs
    )


def drain(client: OutlookClient, cursor: str | None) -> tuple[list[str], list[str], str, int]:
    """Follow nextLinks to the deltaLink: upserted ids, deleted ids, deltaLink, page count."""
    upserts: list[str] = []
    deleted: list[str] = []
    token, pages = None, 0
    while True:
        page: FullPage | ChangesPage
        if cursor is None:
            page = client.list_page(token)
            upserts += [m.provider_message_id for m in page.messages]
        else:
            page = client.changes_page(cursor, token)
            upserts += [m.provider_message_id for m in page.upserts]
            deleted += page.deleted_ids
        pages += 1
        if page.next_page_token is None:
            assert page.cursor is not None
            return upserts, deleted, page.cursor, pages
        assert page.cursor is None
        token = page.next_page_token


def test_delta_pages_to_a_delta_link_then_reports_changes_and_removals(box: Mailbox) -> None:
    ids = [box.add(f"m{i}", sender="bob@example.com") for i in range(5)]
    client = outlook(box, page_size=2)

    first = client.list_page()
    assert len(first.messages) == 2 and first.next_page_token
    message = first.messages[0]
    assert message.sender == "bob@example.com" and message.version
    assert message.received_at is not None and message.received_at.tzinfo == UTC

    upserts, _, delta_link, pages = drain(client, None)
    assert sorted(upserts) == sorted(ids) and pages == 3

    new_id = box.add("later")
    box.control.delete(f"/mailboxes/{box.address}/messages/{ids[0]}").raise_for_status()
    box.post(f"messages/{ids[1]}/labels", json={"add": ["Red"], "remove": ["UNREAD"]})
    upserts, deleted, next_delta, _ = drain(client, delta_link)
    assert sorted(upserts) == sorted([new_id, ids[1]]) and deleted == [ids[0]]
    assert drain(client, next_delta)[:2] == ([], [])


def test_stale_delta_link_is_cursor_expired(box: Mailbox) -> None:
    client = outlook(box)
    _, _, delta_link, _ = drain(client, None)
    box.post("invalidate-delta")
    with pytest.raises(CursorExpired) as info:
        client.changes_page(delta_link)
    assert info.value.status == 410


def test_sync_state_not_found_400_is_cursor_expired() -> None:
    with running_emulator(EmulatorConfig(stale_delta_status=400)) as emulator:
        box = Mailbox(emulator, "outlook", "stale400@outlook.test")
        client = outlook(box)
        _, _, delta_link, _ = drain(client, None)
        box.faults(stale_cursor={"count": 1})
        with pytest.raises(CursorExpired) as info:
            client.changes_page(delta_link)
    assert (info.value.status, info.value.code) == (400, "syncStateNotFound")


def test_429_with_fractional_retry_after(box: Mailbox) -> None:
    client = outlook(box)
    client.list_page()
    box.faults(throttle_429={"retry_after": 2.5})
    with pytest.raises(ProviderThrottled) as info:
        client.list_page()
    assert (info.value.status, info.value.retry_after_s) == (429, 2.5)
    assert info.value.code == "TooManyRequests"


def test_5xx_and_timeout_are_unavailable(box: Mailbox) -> None:
    client = outlook(box, timeout=httpx.Timeout(0.5))
    client.list_page()
    box.faults(server_error={"status": 503})
    with pytest.raises(ProviderUnavailable):
        client.list_page()
    box.faults(timeout={"seconds": 2})
    with pytest.raises(ProviderUnavailable, match="timed out"):
        client.list_page()


def test_subscription_lifecycle(box: Mailbox) -> None:
    client = outlook(box)
    with scripted_server() as receiver:

        def echo(seen: Seen) -> Reply:
            return Reply(200, text=seen.query["validationToken"][0])

        receiver.handler = echo
        wanted = datetime.now(UTC) + timedelta(days=30)
        sub = client.create_subscription(
            f"{receiver.url}/notify", f"{receiver.url}/life", "s3cret-state", wanted
        )
    assert sub.provider == "outlook" and sub.subscription_id
    assert sub.resource == "/me/mailFolders('inbox')/messages"
    assert sub.expires_at < wanted  # Graph's clamped expiry is what counts

    renewed = client.renew_subscription(sub.subscription_id, datetime.now(UTC) + timedelta(hours=2))
    assert abs(renewed.expires_at - (datetime.now(UTC) + timedelta(hours=2))) < timedelta(minutes=1)
    client.reauthorize_subscription(sub.subscription_id)
    client.delete_subscription(sub.subscription_id)
    client.delete_subscription(sub.subscription_id)  # already gone: still fine
    with pytest.raises(ProviderRequestError) as info:
        client.renew_subscription(sub.subscription_id, datetime.now(UTC) + timedelta(hours=1))
    assert info.value.status == 404
    with pytest.raises(ValueError, match="128"):
        client.create_subscription("https://x", "https://y", "s" * 129, wanted)


def test_call_guard_names_every_graph_request(box: Mailbox) -> None:
    for i in range(3):
        box.add(f"m{i}")
    calls: list[tuple[str, int]] = []

    @contextmanager
    def guard(operation: str, cost: int) -> Iterator[None]:
        calls.append((operation, cost))
        yield

    client = outlook(box, page_size=2, call_guard=guard)
    drain(client, None)
    assert calls == [("oauth.token", 0), ("delta", 1), ("delta", 1)]


def test_duplicates_fold_and_foreign_links_are_refused() -> None:
    creds = OAuthCredentials("c", "s", "r", access_token="at")
    with scripted_server() as server:
        item = {"id": "A", "subject": "v1", "changeKey": "1", "isRead": False}
        server.handler = lambda seen: Reply(
            200,
            {
                "value": [
                    item,
                    {"id": "B", "@removed": {"reason": "deleted"}},
                    {**item, "subject": "v2", "changeKey": "2"},
                    {"id": "B", "changeKey": "3"},
                    {"id": "C", "@removed": {"reason": "deleted"}},
                ],
                "@odata.deltaLink": f"{server.url}/v1.0/delta?$deltatoken=x",
            },
        )
        client = OutlookClient(creds, base_url=server.url, token_url=f"{server.url}/token")
        page = client.changes_page(f"{server.url}/v1.0/delta?$deltatoken=w")
        with pytest.raises(ProviderRequestError, match="outside"):
            client.changes_page("https://evil.example/v1.0/delta?$deltatoken=w")
    assert [(m.provider_message_id, m.subject, m.labels) for m in page.upserts] == [
        ("A", "v2", ("UNREAD",)),
        ("B", None, ()),
    ]
    assert page.deleted_ids == ["C"] and page.cursor and page.cursor.endswith("=x")
    assert len(server.requests) == 1
    assert server.requests[0].headers["Prefer"] == "odata.maxpagesize=50"
