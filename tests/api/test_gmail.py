"""POST /webhooks/gmail over real HTTP: verified pushes enqueue one sync; a verified push that
can never be processed is acknowledged (204) and logged as ignored; a bad token gets 401/403."""

from __future__ import annotations

import base64
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import Engine

from models import Provider, SyncTrigger
from tests.api.conftest import (
    SERVICE_ACCOUNT,
    deliveries,
    new_store,
    push_body,
    sign_push_token,
)
from tests.sync_support import jobs_of


def post_push(client: httpx.Client, body: Any, token: str | None, **kwargs: Any) -> httpx.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    if not isinstance(body, dict):  # raw bytes, or an iterator sent chunked
        return client.post("/webhooks/gmail", content=body, headers=headers, **kwargs)
    return client.post("/webhooks/gmail", json=body, headers=headers, **kwargs)


def test_a_verified_push_enqueues_one_sync_and_logs_success(
    client: httpx.Client, api_url: str, engine: Engine, push_key: rsa.RSAPrivateKey
) -> None:
    store = new_store(engine, Provider.GMAIL)
    body = push_body(store.mailbox_address.upper(), history_id=987654)  # case and number
    token = sign_push_token(push_key, f"{api_url}/webhooks/gmail")

    response = post_push(client, body, token)

    assert response.status_code == 204
    [job] = jobs_of(engine, store.id)
    assert job.trigger is SyncTrigger.WEBHOOK
    [row] = deliveries(engine, webhook_id=body["message"]["messageId"])
    assert (row.store_id, row.success, row.response_code) == (store.id, True, 204)
    assert row.webhook_type == "gmail_push" and row.direction.value == "inbound"
    assert row.duration_ms is not None and row.duration_ms >= 0


def _expired(key: rsa.RSAPrivateKey, aud: str) -> str:
    return sign_push_token(key, aud, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)


def _foreign_key_token(_key: rsa.RSAPrivateKey, aud: str) -> str:
    return sign_push_token(rsa.generate_private_key(public_exponent=65537, key_size=2048), aud)


TOKEN_CASES = {
    "missing": (lambda key, aud: None, 401, "missing bearer token"),
    "expired": (_expired, 401, "push token expired"),
    "wrong audience": (
        lambda key, aud: sign_push_token(key, "https://elsewhere.example/push"),
        401,
        "push token audience mismatch",
    ),
    "wrong issuer": (
        lambda key, aud: sign_push_token(key, aud, iss="https://evil.example"),
        401,
        "push token issuer is not Google",
    ),
    "wrong email": (
        lambda key, aud: sign_push_token(key, aud, email="someone@evil.example"),
        403,
        "push token email is not the push service account",
    ),
    "unverified email": (
        lambda key, aud: sign_push_token(key, aud, email_verified=False),
        403,
        "push token email is not verified",
    ),
    "foreign key": (_foreign_key_token, 401, "push token signature invalid"),
    "garbage": (lambda key, aud: "not.a.jwt", 401, "push token malformed"),
}


@pytest.mark.parametrize("case", list(TOKEN_CASES))
def test_a_bad_token_is_refused_without_any_side_effect(
    case: str, client: httpx.Client, api_url: str, engine: Engine, push_key: rsa.RSAPrivateKey
) -> None:
    make_token, status, reason = TOKEN_CASES[case]
    store = new_store(engine, Provider.GMAIL)
    body = push_body(store.mailbox_address)
    before = {r.id for r in deliveries(engine)}

    response = post_push(client, body, make_token(push_key, f"{api_url}/webhooks/gmail"))

    assert (response.status_code, response.json()) == (status, {"error": reason})
    assert jobs_of(engine, store.id) == []
    # An unauthenticated sender cannot fill the delivery log: no row at all.
    assert [r for r in deliveries(engine) if r.id not in before] == []


def _raw(data: str) -> dict[str, Any]:
    return {"message": {"data": data, "messageId": uuid.uuid4().hex}}


def _b64(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


MALFORMED = "ignored (malformed): "
BODY_CASES: dict[str, tuple[Any, str]] = {
    "malformed JSON": (b'{"message": {"data": ', MALFORMED + "malformed JSON body"),
    "not UTF-8": (b'{"message": {"data": "\xff\xfe"}}', MALFORMED + "malformed JSON body"),
    "no message": ({"subscription": "x"}, MALFORMED + "body lacks a message object"),
    "message not an object": ({"message": [1]}, MALFORMED + "body lacks a message object"),
    "no data": ({"message": {"messageId": "1"}}, MALFORMED + "message.data missing"),
    "data not a string": (_raw(12), MALFORMED + "message.data missing"),
    "bad base64": (_raw("!!!not-base64!!!"), MALFORMED + "message.data is not valid base64"),
    "data not JSON": (_raw(_b64("x")[:-2] + "AA"), MALFORMED + "message.data is not JSON"),
    "data a JSON list": (_raw(_b64([1, 2])), MALFORMED + "message.data is not a JSON object"),
    "no address": (
        _raw(_b64({"historyId": "1"})),
        MALFORMED + "message.data lacks a valid emailAddress",
    ),
    "address a number": (
        _raw(_b64({"emailAddress": 7, "historyId": "1"})),
        MALFORMED + "message.data lacks a valid emailAddress",
    ),
    "no historyId": (
        _raw(_b64({"emailAddress": "a@example.com"})),
        MALFORMED + "message.data lacks a historyId string or number",
    ),
    "bad historyId": (
        _raw(_b64({"emailAddress": "a@example.com", "historyId": [1]})),
        MALFORMED + "message.data lacks a historyId string or number",
    ),
    "historyId not a number": (
        _raw(_b64({"emailAddress": "a@example.com", "historyId": "12a"})),
        MALFORMED + "message.data historyId is not a number",
    ),
    "historyId negative": (
        _raw(_b64({"emailAddress": "a@example.com", "historyId": -5})),
        MALFORMED + "message.data historyId is not a number",
    ),
    "unknown address": (
        _raw(_b64({"emailAddress": "nobody@nowhere.example", "historyId": "5"})),
        "ignored (unknown_mailbox): no store has this mailbox address",
    ),
    "NUL in address": (
        _raw(_b64({"emailAddress": "a\u0000@example.com", "historyId": "5"})),
        MALFORMED + "message.data lacks a valid emailAddress",
    ),
}


@pytest.mark.parametrize("case", list(BODY_CASES))
def test_a_verified_push_that_can_never_be_processed_is_acknowledged_and_logged(
    case: str, client: httpx.Client, api_url: str, engine: Engine, push_key: rsa.RSAPrivateKey
) -> None:
    body, message = BODY_CASES[case]
    token = sign_push_token(push_key, f"{api_url}/webhooks/gmail")
    before = {r.id for r in deliveries(engine)}

    response = post_push(client, body, token)

    # 204 is one of the statuses Pub/Sub treats as an ack: no redelivery for 7 days.
    assert (response.status_code, response.content) == (204, b"")
    [row] = [r for r in deliveries(engine) if r.id not in before]
    assert (row.success, row.response_code, row.error_message) == (False, 204, message)
    assert row.webhook_type == "gmail_push" and row.store_id is None


def test_an_oversized_body_is_never_read_and_acknowledged_as_ignored(
    client: httpx.Client, api_url: str, engine: Engine, push_key: rsa.RSAPrivateKey
) -> None:
    store = new_store(engine, Provider.GMAIL)
    token = sign_push_token(push_key, f"{api_url}/webhooks/gmail")
    body = push_body(store.mailbox_address)
    body["padding"] = "x" * (64 * 1024)  # the test app's limit is 64 KiB
    before = {r.id for r in deliveries(engine)}

    declared = post_push(client, body, token)
    chunked = post_push(client, iter([json.dumps(body).encode()]), token)  # no Content-Length
    unsigned = post_push(client, body, None)

    assert (declared.status_code, chunked.status_code) == (204, 204)
    assert (unsigned.status_code, unsigned.json()) == (401, {"error": "missing bearer token"})
    assert jobs_of(engine, store.id) == []
    rows = [r for r in deliveries(engine) if r.id not in before]  # too big to read an id from
    assert [(r.success, r.response_code, r.error_message) for r in rows] == [
        (False, 204, "ignored (malformed): body exceeds 65536 bytes")
    ] * 2


def test_a_burst_of_pushes_folds_into_one_sync(
    api_url: str, engine: Engine, push_key: rsa.RSAPrivateKey
) -> None:
    store = new_store(engine, Provider.GMAIL)
    token = sign_push_token(push_key, f"{api_url}/webhooks/gmail")

    def push(i: int) -> int:
        with httpx.Client(base_url=api_url, timeout=30) as c:
            return post_push(c, push_body(store.mailbox_address, history_id=i), token).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(push, range(200)))

    assert statuses == [204] * 200
    assert len(jobs_of(engine, store.id)) == 1
    rows = deliveries(engine, store_id=store.id)
    assert len(rows) == 200 and all(r.success for r in rows)


def test_the_service_account_is_compared_case_insensitively(
    client: httpx.Client, api_url: str, engine: Engine, push_key: rsa.RSAPrivateKey
) -> None:
    store = new_store(engine, Provider.GMAIL)
    token = sign_push_token(push_key, f"{api_url}/webhooks/gmail", email=SERVICE_ACCOUNT.upper())

    assert post_push(client, push_body(store.mailbox_address), token).status_code == 204
    assert len(jobs_of(engine, store.id)) == 1
