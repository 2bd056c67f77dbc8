"""Standard Webhooks signing: a known vector, rotation, tolerance, and clear errors."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest

from tasks.outbound.signing import (
    WebhookVerificationError,
    new_secret,
    secret_key,
    sign,
    signature_headers,
    verify,
)

KEY = b"0123456789abcdef0123456789abcdef"
SECRET = "whsec_" + base64.b64encode(KEY).decode()
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1_614_265_330
BODY = b'{"test": 2432232314}'


def test_sign_matches_an_independently_computed_hmac() -> None:
    # Given the spec's recipe computed here by hand
    digest = hmac.new(KEY, f"{MSG_ID}.{TIMESTAMP}.".encode() + BODY, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(digest).decode()
    # Then sign() gives the same signature
    assert sign(SECRET, MSG_ID, TIMESTAMP, BODY) == expected


def test_spec_example_vector() -> None:
    # The example of the Standard Webhooks spec (and of Svix's libraries).
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    assert sign(secret, MSG_ID, TIMESTAMP, BODY) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_verify_accepts_a_signed_delivery_with_any_header_case() -> None:
    headers = signature_headers(SECRET, MSG_ID, TIMESTAMP, BODY)
    verify(SECRET, headers, BODY, now=TIMESTAMP + 10)
    verify(SECRET, {k.upper(): v for k, v in headers.items()}, BODY, now=TIMESTAMP)


def test_verify_accepts_one_matching_signature_among_several() -> None:
    headers = signature_headers(SECRET, MSG_ID, TIMESTAMP, BODY)
    other = sign(new_secret(), MSG_ID, TIMESTAMP, BODY)
    headers["webhook-signature"] = (
        f"{other} v1a,bm90LWFzeW1tZXRyaWM= {headers['webhook-signature']}"
    )
    verify(SECRET, headers, BODY, now=TIMESTAMP)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"body": b'{"test": 1}'}, "no signature matches"),
        ({"secret": new_secret()}, "no signature matches"),
        ({"now": TIMESTAMP + 301}, "too old or too new"),
        ({"now": TIMESTAMP - 301}, "too old or too new"),
    ],
)
def test_verify_rejects_tampering_wrong_secret_and_stale_timestamps(
    change: dict[str, object], message: str
) -> None:
    headers = signature_headers(SECRET, MSG_ID, TIMESTAMP, BODY)
    args: dict[str, object] = {"secret": SECRET, "body": BODY, "now": TIMESTAMP, **change}
    with pytest.raises(WebhookVerificationError, match=message):
        verify(args["secret"], headers, args["body"], now=args["now"])  # type: ignore[arg-type]


def test_verify_names_missing_headers_and_bad_timestamps() -> None:
    with pytest.raises(WebhookVerificationError, match="webhook-signature"):
        verify(SECRET, {"webhook-id": MSG_ID, "webhook-timestamp": str(TIMESTAMP)}, BODY)
    headers = signature_headers(SECRET, MSG_ID, TIMESTAMP, BODY) | {"webhook-timestamp": "soon"}
    with pytest.raises(WebhookVerificationError, match="not an integer"):
        verify(SECRET, headers, BODY)


def test_tolerance_is_configurable() -> None:
    headers = signature_headers(SECRET, MSG_ID, TIMESTAMP, BODY)
    verify(SECRET, headers, BODY, now=TIMESTAMP + 3600, tolerance_s=3600)


def test_new_secrets_are_random_and_well_formed() -> None:
    first, second = new_secret(), new_secret()
    assert first != second
    assert first.startswith("whsec_")
    assert len(secret_key(first)) == 24


@pytest.mark.parametrize("bad", ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "whsec_"])
def test_malformed_secrets_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="secret"):
        sign(bad, MSG_ID, TIMESTAMP, BODY)


def test_our_signature_verifies_with_the_independent_standardwebhooks_package() -> None:
    from standardwebhooks.webhooks import Webhook

    secret = new_secret()
    body = b'{"type": "sync.completed", "data": {"job_id": "1"}}'
    timestamp = int(time.time())
    headers = {
        "webhook-id": "msg_independent",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, "msg_independent", timestamp, body),
    }
    assert Webhook(secret).verify(body, headers) == {
        "type": "sync.completed",
        "data": {"job_id": "1"},
    }
