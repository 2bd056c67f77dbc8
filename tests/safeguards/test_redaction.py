"""Secrets never survive redaction: secret keys at any depth, secret-shaped strings anywhere."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from safeguards.redaction import REDACTED, is_secret_key, redact, redact_text, truncate

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
FERNET = "gAAAAABmZ3x1c2VjcmV0LXBheWxvYWQtdGhhdC1pcy1sb25nLWVub3VnaA=="
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.mark.parametrize(
    "key",
    [
        "password", "PASSWORD", "db_password", "secret", "client_secret", "token",
        "access_token", "Refresh-Token", "authorization", "Authorization", "api_key",
        "X-Api-Key", "apikey", "clientState", "client_state", "credentials", "cookie",
        "Set-Cookie", "private_key", "auth",
    ],
)  # fmt: skip
def test_secret_keys_are_recognised_case_insensitively(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key", ["store_id", "page_token", "next_page_token", "author", "queue", "routing_key"]
)
def test_ordinary_keys_and_sync_cursors_are_kept(key: str) -> None:
    assert not is_secret_key(key)


def test_secret_keys_are_redacted_at_any_depth_in_dicts_and_lists() -> None:
    given: dict[str, Any] = {
        "store_id": "s-1",
        "credentials": {"refresh_token": "r", "scopes": ["mail"]},
        "accounts": [{"name": "a", "Password": "hunter2"}, ({"api_key": 42},)],
        "headers": {"Authorization": "Bearer abc.def", "X-Trace": "t-1"},
    }

    redacted = redact(given)

    assert redacted == {
        "store_id": "s-1",
        "credentials": REDACTED,
        "accounts": [{"name": "a", "Password": REDACTED}, [{"api_key": REDACTED}]],
        "headers": {"Authorization": REDACTED, "X-Trace": "t-1"},
    }
    assert given["accounts"][0]["Password"] == "hunter2"  # the input is not modified


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("401 from Gmail: header Authorization: Bearer ya29.a0AfH6SMBx-secret", "ya29.a0AfH6SMBx"),
        ("sent Bearer abcdef0123456789 upstream", "abcdef0123456789"),
        (f"bad signature for {JWT}", JWT),
        (f"could not decrypt {FERNET}", FERNET),
        (f"signing with {WHSEC} failed", WHSEC),
        ("GET https://x.test/cb?access_token=s3cr3t&state=1 -> 500", "s3cr3t"),
        ("payload {'client_secret': 'abc123xyz', 'id': 7}", "abc123xyz"),
        ('{"password": "hunter2"}', "hunter2"),
        ("connect postgresql://app:pa55word@db:5432/x failed", "pa55word"),
        ("refresh 1//0gLongRefreshTokenValue_abc failed", "1//0gLongRefreshTokenValue_abc"),
    ],
)
def test_secret_shaped_strings_are_masked_in_free_text(text: str, secret: str) -> None:
    masked = redact_text(text)

    assert secret not in masked
    assert REDACTED in masked


def test_free_text_without_secrets_is_unchanged() -> None:
    text = "HTTP 503 from gmail.googleapis.com after 3 attempts; page_token=CAIQ12 kept"

    assert redact_text(text) == text


def test_string_values_are_masked_under_ordinary_keys_too() -> None:
    redacted = redact({"args": ["store-1", f"token is {JWT}"], "note": WHSEC})

    assert JWT not in json.dumps(redacted)
    assert WHSEC not in json.dumps(redacted)


def test_result_is_json_safe() -> None:
    store_id = uuid.uuid4()
    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)

    redacted = redact({"store_id": store_id, "at": when, "ids": {1, 2}, "raw": b"\xff\x00"})

    json.dumps(redacted)
    assert redacted["store_id"] == str(store_id)
    assert redacted["at"] == "2024-01-02T03:04:05+00:00"
    assert redacted["raw"] == "[2 bytes]"


def test_truncate_marks_the_cut_and_respects_the_limit() -> None:
    assert truncate("short", 10) == "short"
    cut = truncate("x" * 100, 20)
    assert len(cut) == 20
    assert cut.endswith("[truncated]")


def test_authorization_values_are_masked_whole_whatever_the_scheme() -> None:
    text = "sent Authorization: Basic dXNlcjpwYXNz and authorization=Bearer abc123def456"

    masked = redact_text(text)

    assert "dXNlcjpwYXNz" not in masked and "abc123def456" not in masked
    assert masked == "sent Authorization: [REDACTED] and authorization=[REDACTED]"


def test_prose_about_tokens_is_left_readable() -> None:
    text = "Token expired; Basic validation failed; bearer short"

    assert redact_text(text) == text


@pytest.mark.parametrize("chunk", ["x", "a.", "token", "eyJ-", "k=v&", "gAAAAA-", "Basic "])
def test_long_adversarial_input_is_redacted_in_bounded_time(chunk: str) -> None:
    text = chunk * (100_000 // len(chunk))

    started = time.perf_counter()
    redact_text(text)

    assert time.perf_counter() - started < 2.0
