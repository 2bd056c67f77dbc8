"""Health check, error shapes, and 503 (only) when a dependency is down."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import Engine

from models import Provider
from tests.api.conftest import (
    SERVICE_ACCOUNT,
    deliveries,
    new_store,
    push_body,
    serve,
    sign_push_token,
)
from tests.sync_support import jobs_of


def test_healthz_checks_the_database(client: httpx.Client) -> None:
    response = client.get("/healthz")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_unknown_routes_answer_json_errors(client: httpx.Client) -> None:
    assert client.get("/webhooks/gmail").json() == {"error": "Method Not Allowed"}
    assert client.post("/nowhere").status_code == 404


@pytest.fixture
def unreachable_jwks_url() -> Iterator[str]:
    """An app whose push keys come from a JWKS URL nobody listens on (Google down)."""
    from api import create_app
    from providers.emulator.runner import free_port
    from syncguard.settings import Settings

    settings = Settings(
        gmail_push_jwks_url=f"http://127.0.0.1:{free_port()}/certs",
        gmail_push_jwks_timeout_s=1.0,
        gmail_push_service_account=SERVICE_ACCOUNT,
    )
    url, server, thread = serve(create_app(settings))
    yield url
    server.should_exit = True
    thread.join(timeout=10)


def test_an_unreachable_key_server_is_an_outage_503(
    unreachable_jwks_url: str, engine: Engine, push_key: rsa.RSAPrivateKey
) -> None:
    store = new_store(engine, Provider.GMAIL)
    body = push_body(store.mailbox_address)
    token = sign_push_token(push_key, f"{unreachable_jwks_url}/webhooks/gmail")

    response = httpx.post(
        f"{unreachable_jwks_url}/webhooks/gmail",
        content=json.dumps(body),
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )

    assert (response.status_code, response.json()) == (503, {"error": "temporarily unavailable"})
    assert jobs_of(engine, store.id) == []
    [row] = deliveries(engine, webhook_id=body["message"]["messageId"])
    assert (row.success, row.response_code) == (False, 503)


def test_an_unconfigured_service_account_refuses_pushes_with_503(
    engine: Engine, push_key: rsa.RSAPrivateKey
) -> None:
    from api import create_app
    from syncguard.settings import Settings

    app = create_app(Settings(gmail_push_keys="", gmail_push_service_account=None))
    url, server, thread = serve(app)
    body = push_body(f"{uuid.uuid4().hex}@example.com")
    try:
        response = httpx.post(f"{url}/webhooks/gmail", json=body, timeout=10)
    finally:
        server.should_exit = True
        thread.join(timeout=10)

    assert response.status_code == 503
    assert response.json() == {"error": "gmail push service account is not configured"}
