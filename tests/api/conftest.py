"""The API served over real HTTP, a test-owned push signing key, and builders of rows and tokens."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any, cast

import httpx
import jwt
import pytest
import redis
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from sqlalchemy import Engine, select

from models import Provider, Store, SubscriptionStatus, WebhookDeliveryLog, WebhookSubscription
from syncguard.db import service_session
from tests.factories import make_business

#: The push service account the test app trusts.
SERVICE_ACCOUNT = "gmail-push@syncguard-test.iam.gserviceaccount.com"
#: kid of the test's own signing key.
TEST_KID = "test-key-1"
#: Every store and subscription row this session created (their queued messages get removed).
CREATED_IDS: set[str] = set()


def serve(app: Any) -> tuple[str, Any, Any]:
    """Serve ``app`` with uvicorn on a free port in a thread."""
    from providers.emulator.runner import start_background

    return start_background(app)


@pytest.fixture(scope="session")
def push_key() -> rsa.RSAPrivateKey:
    """The RSA key the tests sign push tokens with (trusted by the ``api_url`` app)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def api_url(engine: Engine, push_key: rsa.RSAPrivateKey) -> Iterator[str]:
    """Base URL of the API served by uvicorn, trusting ``push_key`` as a static JWKS."""
    from api import create_app
    from syncguard.settings import Settings

    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(push_key.public_key(), as_dict=True)
    jwk.update(kid=TEST_KID, alg="RS256", use="sig")
    settings = Settings(
        gmail_push_keys=json.dumps({"keys": [jwk]}),
        gmail_push_service_account=SERVICE_ACCOUNT,
        webhook_max_body_bytes=64 * 1024,
    )
    url, server, thread = serve(create_app(settings))
    yield url
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def client(api_url: str) -> Iterator[httpx.Client]:
    """An HTTP client of the served API."""
    with httpx.Client(base_url=api_url, timeout=10) as c:
        yield c


@pytest.fixture(scope="session", autouse=True)
def _drop_our_queued_messages(redis_client: redis.Redis) -> Iterator[None]:
    """After the session, remove the messages these tests left queued (no worker runs here)."""
    yield
    for queue in ("sync", "webhooks"):
        for raw, _task, args in queued(redis_client, queue):
            if args and str(args[0]) in CREATED_IDS:
                redis_client.lrem(queue_key(queue), 1, raw)  # type: ignore[arg-type]


def queue_key(queue: str) -> str:
    """The Redis list kombu keeps a queue's messages in (under the global key prefix)."""
    from syncguard.settings import get_settings

    return f"{get_settings().redis_prefix}{queue}"


def queued(client: redis.Redis, queue: str) -> list[tuple[bytes, str, list[Any]]]:
    """The messages waiting in ``queue``: (raw, task name, positional args)."""
    found: list[tuple[bytes, str, list[Any]]] = []
    # A client without decode_responses: the stubs' bytes | str is only ever bytes here.
    for raw in cast(list[bytes], client.lrange(queue_key(queue), 0, -1)):
        message = json.loads(raw)
        args = json.loads(base64.b64decode(message["body"]))[0]
        found.append((raw, message["headers"]["task"], args))
    return found


def new_store(engine: Engine, provider: Provider, address: str | None = None) -> Store:
    """A committed store of a new business."""
    with service_session(engine) as session:
        business = make_business(session)
        store = Store(
            business_id=business.id,
            provider=provider,
            mailbox_address=address or f"shop-{uuid.uuid4().hex[:8]}@example.com",
        )
        session.add(store)
        session.flush()
    CREATED_IDS.add(str(store.id))
    return store


def new_subscription(
    engine: Engine, store: Store, client_state: str, graph_id: str | None = None
) -> WebhookSubscription:
    """A committed active Graph subscription of ``store`` whose clientState is ``client_state``."""
    with service_session(engine) as session:
        sub = WebhookSubscription(
            business_id=store.business_id,
            store_id=store.id,
            provider=store.provider,
            provider_subscription_id=graph_id or str(uuid.uuid4()),
            resource="/me/mailFolders('inbox')/messages",
            client_state_hash=hashlib.sha256(client_state.encode()).hexdigest(),
            status=SubscriptionStatus.ACTIVE,
        )
        session.add(sub)
        session.flush()
    CREATED_IDS.add(str(sub.id))
    return sub


def subscription(engine: Engine, row_id: uuid.UUID) -> WebhookSubscription:
    """The subscription row as stored now."""
    with service_session(engine) as session:
        sub = session.get(WebhookSubscription, row_id)
        assert sub is not None
        return sub


def deliveries(
    engine: Engine, *, webhook_id: str | None = None, store_id: uuid.UUID | None = None
) -> list[WebhookDeliveryLog]:
    """The inbound delivery-log rows with this webhook id or store, oldest first."""
    stmt = select(WebhookDeliveryLog).order_by(WebhookDeliveryLog.created_at)
    if webhook_id is not None:
        stmt = stmt.where(WebhookDeliveryLog.webhook_id == webhook_id)
    if store_id is not None:
        stmt = stmt.where(WebhookDeliveryLog.store_id == store_id)
    with service_session(engine) as session:
        return list(session.scalars(stmt))


def sign_push_token(key: rsa.RSAPrivateKey, audience: str, **overrides: Any) -> str:
    """A push OIDC token as Pub/Sub would attach it, with ``overrides`` applied to the claims."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "aud": audience,
        "iss": "https://accounts.google.com",
        "email": SERVICE_ACCOUNT,
        "email_verified": True,
        "sub": "1234567890",
        "iat": now,
        "exp": now + 3600,
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": TEST_KID})


def push_body(address: str, history_id: str | int = "12345", message_id: str | None = None) -> Any:
    """A Pub/Sub push body carrying a Gmail notification (base64url, padding stripped)."""
    data = json.dumps({"emailAddress": address, "historyId": history_id}).encode()
    return {
        "message": {
            "data": base64.urlsafe_b64encode(data).decode().rstrip("="),
            "messageId": message_id or uuid.uuid4().hex,
            "publishTime": "2024-01-01T00:00:00Z",
        },
        "subscription": "projects/test/subscriptions/gmail-push",
    }
