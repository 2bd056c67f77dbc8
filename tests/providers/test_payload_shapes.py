"""Both adapters read a message whose optional fields have unexpected shapes (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from providers import gmail, outlook
from providers.errors import ProviderPayloadError


def test_a_well_formed_gmail_message_has_nothing_unreadable() -> None:
    message = gmail.parse_message(
        {
            "id": "m1",
            "threadId": "t1",
            "labelIds": ["INBOX"],
            "payload": {"headers": [{"name": "Subject", "value": "Hi"}]},
            "internalDate": "1700000000000",
            "sizeEstimate": 12,
            "historyId": "5",
        }
    )
    assert message.unreadable == ()
    assert (message.subject, message.size_bytes) == ("Hi", 12)
    assert message.received_at == datetime.fromtimestamp(1_700_000_000, tz=UTC)


def test_gmail_fields_of_the_wrong_shape_are_left_empty_and_named() -> None:
    message = gmail.parse_message(
        {
            "id": "m1",
            "threadId": 42,
            "labelIds": "INBOX",
            "payload": {"headers": [None, {"name": "From", "value": ["a@b"]}]},
            "internalDate": "9" * 30,  # far past any datetime
            "sizeEstimate": "about 3k",
        }
    )
    assert message.unreadable == ("thread_id", "labels", "sender", "received_at", "size_bytes")
    assert (message.thread_id, message.labels, message.sender) == (None, (), None)
    assert (message.received_at, message.size_bytes, message.subject) == (None, None, None)


def test_a_gmail_payload_that_is_no_object_reads_as_no_headers() -> None:
    message = gmail.parse_message({"id": "m1", "payload": "garbage"})
    assert (message.subject, message.sender, message.unreadable) == (None, None, ())


def test_graph_fields_of_the_wrong_shape_are_left_empty_and_named() -> None:
    message = outlook.parse_message(
        {
            "id": "AAMk1",
            "conversationId": {"id": "c"},
            "categories": ["Red", None],
            "subject": 7,
            "from": {"emailAddress": "not an object"},
            "receivedDateTime": "yesterday",
            "changeKey": ["v"],
            "isRead": False,
        }
    )
    assert message.unreadable == (
        "labels",
        "thread_id",
        "subject",
        "received_at",
        "provider_version",
    )
    assert message.labels == ("Red", "UNREAD")
    assert (message.thread_id, message.subject, message.sender) == (None, None, None)
    assert (message.received_at, message.version) == (None, None)


@pytest.mark.parametrize("parse", [gmail.parse_message, outlook.parse_message])
def test_a_message_without_an_id_is_still_an_error(parse: object) -> None:
    # A typed data error (permanent; the sync sets the item aside), not a bare KeyError
    for body in ({"subject": "no id"}, {"id": None}, {"id": ["x"]}, {"id": ""}):
        with pytest.raises(ProviderPayloadError, match="required id"):
            parse(body)  # type: ignore[operator]
