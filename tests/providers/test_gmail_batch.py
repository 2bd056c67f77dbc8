"""Gmail's batch endpoint: the adapter against the emulator over HTTP (issue 12, goal 5)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from providers import gmail_batch
from providers.emulator.runner import EmulatorHandle, running_emulator
from providers.errors import ProviderThrottled, ProviderUnavailable
from providers.gmail import GmailClient
from tests.providers import Mailbox


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


@pytest.fixture
def box(emulator: EmulatorHandle, request: pytest.FixtureRequest) -> Mailbox:
    return Mailbox(emulator, "gmail", f"{request.node.name[:40]}@gmail.test")


class Guard:
    """A call guard that records each call's operation, cost and outcome."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, str]] = []

    @contextmanager
    def __call__(self, operation: str, cost: int) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            self.calls.append((operation, cost, type(exc).__name__))
            raise
        self.calls.append((operation, cost, "ok"))


def client(box: Mailbox, guard: Guard, **kwargs: object) -> GmailClient:
    return GmailClient(
        box.credentials,
        base_url=box.url,
        token_url=f"{box.url}/oauth2/token",
        call_guard=guard,
        **kwargs,  # type: ignore[arg-type]
    )


def test_a_page_is_fetched_in_batches_each_call_costing_its_units(box: Mailbox) -> None:
    ids = [box.add(f"m{i}", sender="shop@example.com") for i in range(120)]
    guard = Guard()

    page = client(box, guard, page_size=120, batch_size=50).list_page()

    assert sorted(m.provider_message_id for m in page.messages) == sorted(ids)
    first = next(m for m in page.messages if m.provider_message_id == ids[0])
    assert (first.subject, first.sender) == ("m0", "shop@example.com")
    assert "INBOX" in first.labels and first.received_at is not None and first.version
    batches = [c for c in guard.calls if c[0] == "messages.get"]
    assert batches == [("messages.get", 1000, "ok")] * 2 + [("messages.get", 400, "ok")]
    stats = box.stats()
    assert stats["requests"]["gmail.batch"] == 3
    assert stats["requests"]["gmail.messages.get"] == 120  # each inner call counted as one


def test_a_message_gone_since_it_was_listed_is_none_in_its_place(box: Mailbox) -> None:
    ids = [box.add(f"m{i}") for i in range(3)]
    box.delete(ids[1])
    fetched = client(box, Guard()).get_messages(ids)
    assert [m.provider_message_id if m else None for m in fetched] == [ids[0], None, ids[2]]


def test_one_inner_429_raises_throttled_with_its_retry_after_inside_the_guard(
    box: Mailbox,
) -> None:
    ids = [box.add(f"m{i}") for i in range(5)]
    guard = Guard()
    gmail = client(box, guard)
    gmail.current_cursor()  # the token is fetched before the fault
    box.faults(throttle_429={"count": 1, "retry_after": 7})

    with pytest.raises(ProviderThrottled) as info:
        gmail.get_messages(ids)

    assert (info.value.status, info.value.retry_after_s) == (429, 7.0)
    assert guard.calls[-1] == ("messages.get", 100, "ProviderThrottled")  # the guard saw it
    assert box.stats()["responses"]["gmail.messages.get"] == {"429": 1, "200": 4}
    # The fault spent, the same call succeeds whole
    assert [m.provider_message_id for m in gmail.get_messages(ids) if m] == ids


def test_one_inner_5xx_raises_unavailable_like_a_plain_call(box: Mailbox) -> None:
    ids = [box.add(f"m{i}") for i in range(4)]
    guard = Guard()
    gmail = client(box, guard)
    gmail.current_cursor()
    box.faults(server_error={"status": 503, "count": 1, "retry_after": 3})

    with pytest.raises(ProviderUnavailable) as info:
        gmail.get_messages(ids)

    assert (info.value.status, info.value.retry_after_s) == (503, 3.0)
    assert guard.calls[-1] == ("messages.get", 80, "ProviderUnavailable")
    assert [m.provider_message_id for m in gmail.get_messages(ids) if m] == ids


def test_batch_size_is_bounded_by_gmail_limit(box: Mailbox) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        client(box, Guard(), batch_size=101)


def _post_batch(box: Mailbox, content_type: str, body: bytes) -> httpx.Response:
    """A raw batch request with the mailbox's own token: the emulator's parser on its own."""
    token = client(box, Guard()).session.refresh().access_token
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {token}"}
    return httpx.post(f"{box.url}/batch/gmail/v1", content=body, headers=headers)


def test_the_emulator_reads_a_batch_with_a_preamble_and_bare_line_feeds(box: Mailbox) -> None:
    ids = [box.add(f"m{i}") for i in range(2)]
    body = "".join(
        f"--b1\nContent-Type: application/http\nContent-ID: <c{n}>\n\n"
        f"GET /gmail/v1/users/me/messages/{i}?format=minimal HTTP/1.1\n\n"
        for n, i in enumerate(ids)
    )
    answer = _post_batch(
        box, "multipart/mixed; boundary=b1", f"a preamble\n{body}--b1--\n".encode()
    )

    assert answer.status_code == 200
    decoded = gmail_batch.decode(answer)
    assert sorted(decoded) == ["c0", "c1"]
    assert [json.loads(decoded[f"c{n}"].body)["id"] for n in range(2)] == ids


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b'{"not": "multipart"}'),
        ("multipart/mixed", b"--b1\r\n\r\nGET /x HTTP/1.1\r\n\r\n--b1--\r\n"),  # no boundary
        ("multipart/mixed; boundary=b1", b"--b1\r\n\r\nGET /x HTTP/1.1\r\n\r\n"),  # truncated
        ("multipart/mixed; boundary=b1", b"--b1--\r\n"),  # no calls
    ],
    ids=["json", "no-boundary", "truncated", "empty"],
)
def test_unsplittable_batch_refused(box: Mailbox, content_type: str, body: bytes) -> None:
    box.add("m0")
    answer = _post_batch(box, content_type, body)
    assert answer.status_code == 400
