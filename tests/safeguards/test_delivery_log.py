"""The webhook delivery log on the real database: ids, the seed query, inbound and outbound."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Engine, text

from models import Direction, WebhookDeliveryLog, WebhookEndpoint
from safeguards.delivery_log import MAX_ERROR_MESSAGE_CHARS, log_webhook_delivery
from syncguard.db import service_session
from tests.factories import make_business, make_store

SEED_DELIVERIES = (
    "SELECT * FROM webhook_delivery_log WHERE store_id = 'your-store-id' "
    "ORDER BY created_at DESC LIMIT 10;"
)


@pytest.fixture
def store_ids(engine: Engine) -> tuple[uuid.UUID, uuid.UUID]:
    """(business_id, store_id) of a new committed store."""
    with service_session(engine) as session:
        business = make_business(session)
        store = make_store(session, business)
        return business.id, store.id


def _row(engine: Engine, delivery_id: uuid.UUID) -> WebhookDeliveryLog:
    with service_session(engine) as session:
        row = session.get(WebhookDeliveryLog, delivery_id)
        assert row is not None
        return row


def test_a_delivery_is_logged_and_the_seed_query_returns_it(
    engine: Engine, store_ids: tuple[uuid.UUID, uuid.UUID]
) -> None:
    business_id, store_id = store_ids

    delivery_id = log_webhook_delivery(store_id, "msg-1", "gmail_push", True, 202, None, 12)

    assert isinstance(delivery_id, uuid.UUID)
    with engine.connect() as conn:
        sql = SEED_DELIVERIES.replace("your-store-id", str(store_id))
        rows = [dict(r._mapping) for r in conn.execute(text(sql))]
    assert [r["id"] for r in rows] == [delivery_id]
    row = rows[0]
    assert (row["webhook_id"], row["webhook_type"], row["success"]) == ("msg-1", "gmail_push", True)
    assert (row["response_code"], row["duration_ms"]) == (202, 12)
    assert row["business_id"] == business_id  # filled by the trigger
    assert (row["direction"], row["attempt"]) == ("inbound", 1)


def test_an_inbound_notification_for_an_unknown_subscription_has_no_store(engine: Engine) -> None:
    delivery_id = log_webhook_delivery(
        None, None, "outlook_change", False, 404, "unknown subscription", 3
    )

    row = _row(engine, delivery_id)
    assert row.store_id is None and row.business_id is None
    assert row.error_message == "unknown subscription"


def test_an_outbound_attempt_records_direction_attempt_and_endpoint(
    engine: Engine, store_ids: tuple[uuid.UUID, uuid.UUID]
) -> None:
    business_id, _ = store_ids
    with service_session(engine) as session:
        endpoint = WebhookEndpoint(
            business_id=business_id, url="https://hooks.test/x", secret_encrypted=b"x"
        )
        session.add(endpoint)
        session.flush()
        endpoint_id = endpoint.id

    delivery_id = log_webhook_delivery(
        None,
        "evt-9",
        "sync.completed",
        False,
        500,
        "upstream error",
        250,
        direction=Direction.OUTBOUND,
        attempt=3,
        endpoint_id=endpoint_id,
        business_id=business_id,
    )

    row = _row(engine, delivery_id)
    assert (row.direction, row.attempt, row.endpoint_id) == (Direction.OUTBOUND, 3, endpoint_id)
    assert row.business_id == business_id


def test_error_messages_are_redacted_and_truncated(engine: Engine) -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    message = f"401 with Authorization: Bearer abc123token, secret {secret}; " + "x" * 10_000

    delivery_id = log_webhook_delivery(None, "m", "gmail_push", False, 401, message, 5)

    stored = _row(engine, delivery_id).error_message
    assert stored is not None
    assert secret not in stored and "abc123token" not in stored
    assert len(stored) <= MAX_ERROR_MESSAGE_CHARS


def test_a_log_written_in_the_callers_session_commits_with_it(
    engine: Engine, store_ids: tuple[uuid.UUID, uuid.UUID]
) -> None:
    _, store_id = store_ids
    with service_session(engine) as session:
        delivery_id = log_webhook_delivery(
            store_id, "m", "gmail_push", True, 200, None, 1, session=session
        )
        session.rollback()

    with service_session(engine) as session:
        assert session.get(WebhookDeliveryLog, delivery_id) is None
