"""Retry-After: the one parser as a pure function, then on every status the adapters see.

The adapters run against the emulator over real HTTP; every typed error carries the hint.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest

from providers.emulator.runner import EmulatorHandle, running_emulator
from providers.errors import (
    ProviderError,
    ProviderThrottled,
    ProviderUnavailable,
    retry_after_s,
)
from providers.gmail import GmailClient
from providers.outlook import OutlookClient
from providers.retry_after import MAX_RETRY_AFTER_S, parse_retry_after
from tests.providers import Mailbox

#: 2026-01-01T00:00:00Z, the clock reading the pure tests parse against.
NOW = 1_767_225_600.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("20", 20.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        ("2.5", 2.5),  # Graph documents fractional seconds
        ("Thu, 01 Jan 2026 00:00:30 GMT", 30.0),  # IMF-fixdate
        ("Thursday, 01-Jan-26 00:01:00 GMT", 60.0),  # RFC 850, obsolete but MUST be accepted
        ("Thu Jan  1 00:00:45 2026", 45.0),  # asctime: no zone, GMT by definition
        ("Wed, 31 Dec 2025 23:59:00 GMT", 0.0),  # already past: go now
        ("999999999", MAX_RETRY_AFTER_S),  # absurd: capped
        ("9" * 400, MAX_RETRY_AFTER_S),  # overflows a float: still capped, no error
        ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_RETRY_AFTER_S),
    ],
)
def test_the_parser_reads_both_forms_of_rfc_9110(header: str, seconds: float) -> None:
    assert parse_retry_after(header, NOW) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "header",
    [None, "", "   ", "soon", "-5", "+5", "1e3", "nan", "inf", "²", "20s", "Thu, 32 Jan 2026"],
)
def test_the_parser_ignores_garbage(header: str | None) -> None:
    assert parse_retry_after(header, NOW) is None


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("20, 30", 30.0),  # two header lines, as httpx joins them
        ("30,20", 30.0),
        ("soon, 5", 5.0),  # the unusable one is ignored, the usable one kept
        ("-1, 4", 4.0),
        ("Thu, 01 Jan 2026 00:01:00 GMT, 12", 60.0),  # a date's own comma does not split it
        ("12, Thursday, 01-Jan-26 00:01:00 GMT", 60.0),
    ],
)
def test_several_values_give_the_longest_usable_wait(header: str, seconds: float) -> None:
    assert parse_retry_after(header, NOW) == pytest.approx(seconds)


def test_two_retry_after_headers_on_a_real_response_give_the_longer() -> None:
    response = httpx.Response(429, headers=[("Retry-After", "20"), ("Retry-After", "30")])

    assert retry_after_s(response, now=NOW) == 30.0


def test_the_cap_is_the_callers_to_choose() -> None:
    assert parse_retry_after("3600", NOW, max_s=60.0) == 60.0


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


@pytest.fixture
def gmail_box(emulator: EmulatorHandle) -> Mailbox:
    return Mailbox(emulator, "gmail", f"ra-{uuid.uuid4().hex[:8]}@gmail.test")


@pytest.fixture
def outlook_box(emulator: EmulatorHandle) -> Mailbox:
    return Mailbox(emulator, "outlook", f"ra-{uuid.uuid4().hex[:8]}@outlook.test")


def gmail(box: Mailbox) -> GmailClient:
    return GmailClient(box.credentials, base_url=box.url, token_url=f"{box.url}/oauth2/token")


def outlook(box: Mailbox) -> OutlookClient:
    return OutlookClient(
        box.credentials, base_url=box.url, token_url=f"{box.url}/oauth2/v2.0/token"
    )


def test_graph_delta_503_carries_its_retry_after(outlook_box: Mailbox) -> None:
    client = outlook(outlook_box)
    outlook_box.faults(server_error={"status": 503, "retry_after": 20})

    with pytest.raises(ProviderUnavailable) as info:
        client.list_page()

    assert (info.value.status, info.value.retry_after_s) == (503, 20.0)
    client.list_page()  # one 503, then Graph answers again


def test_gmail_503_with_an_http_date(gmail_box: Mailbox) -> None:
    client = gmail(gmail_box)
    client.current_cursor()
    before = time.time()
    when = format_datetime(datetime.fromtimestamp(before + 90, tz=UTC), usegmt=True)
    gmail_box.faults(server_error={"status": 503, "retry_after": when})

    with pytest.raises(ProviderUnavailable) as info:
        client.current_cursor()

    assert info.value.status == 503
    # The date has whole seconds and the parse happened after `before`: at most 90 s left.
    assert info.value.retry_after_s is not None
    assert 80.0 <= info.value.retry_after_s <= 90.0


@pytest.mark.parametrize("status", [500, 502, 504])
def test_a_5xx_without_the_header_carries_no_hint(gmail_box: Mailbox, status: int) -> None:
    client = gmail(gmail_box)
    gmail_box.faults(server_error={"status": status})

    with pytest.raises(ProviderUnavailable) as info:
        client.current_cursor()

    assert (info.value.status, info.value.retry_after_s) == (status, None)


def test_gmail_quota_403_with_retry_after_is_a_throttle_with_its_hint(gmail_box: Mailbox) -> None:
    client = gmail(gmail_box)
    gmail_box.faults(quota_403={"reason": "rateLimitExceeded", "retry_after": 30})

    with pytest.raises(ProviderThrottled) as info:
        client.current_cursor()

    assert (info.value.status, info.value.code, info.value.retry_after_s) == (
        403,
        "rateLimitExceeded",
        30.0,
    )


@pytest.mark.parametrize("provider", ["gmail", "outlook"])
def test_token_endpoint_503_carries_its_retry_after(
    emulator: EmulatorHandle, provider: str
) -> None:
    box = Mailbox(emulator, provider, f"token-503-{provider}@{provider}.test")
    client = gmail(box) if provider == "gmail" else outlook(box)
    box.faults(token_error={"status": 503, "retry_after": 15})

    with pytest.raises(ProviderUnavailable) as info:
        client.list_page()

    assert (info.value.provider, info.value.status, info.value.retry_after_s) == (
        "oauth",
        503,
        15.0,
    )
    client.list_page()  # the fault was for one request: the next refresh succeeds


@pytest.mark.parametrize("header", ["soon", "-1", "Thu, 32 Jan 2026 00:00:00 GMT"])
def test_an_unparseable_retry_after_is_ignored_safely(outlook_box: Mailbox, header: str) -> None:
    client = outlook(outlook_box)
    outlook_box.faults(throttle_429={"retry_after": header})

    with pytest.raises(ProviderThrottled) as info:
        client.list_page()

    assert (info.value.status, info.value.retry_after_s) == (429, None)


def test_every_typed_error_has_the_attribute() -> None:
    # The task side reads retry_after_s off any ProviderError, so none may lack it.
    assert ProviderError("x", provider="gmail").retry_after_s is None


@pytest.mark.parametrize("status", [500, 502, 504])
def test_any_5xx_with_retry_after_carries_it(gmail_box: Mailbox, status: int) -> None:
    client = gmail(gmail_box)
    gmail_box.faults(server_error={"status": status, "retry_after": "12"})

    with pytest.raises(ProviderUnavailable) as info:
        client.current_cursor()

    assert (info.value.status, info.value.retry_after_s) == (status, 12.0)


def test_the_emulator_refuses_a_non_5xx_server_error(gmail_box: Mailbox) -> None:
    answer = gmail_box.control.put(
        f"/mailboxes/{gmail_box.address}/faults", json={"server_error": {"status": 429}}
    )
    assert answer.status_code == 422
