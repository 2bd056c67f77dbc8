"""Gmail's batch endpoint: the adapter against the emulator over HTTP (issue 12, goal 5)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

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
