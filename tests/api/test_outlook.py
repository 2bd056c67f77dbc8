"""POST /webhooks/outlook[/lifecycle]: handshake, mixed bodies, clientState, lifecycle events.

Every body is acknowledged with 202 unless we are down: what can never be processed is ignored
(verified items logged as such, unverified ones only counted)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import Engine

from models import Provider, SyncTrigger, WebhookSubscription
from tests.api.conftest import deliveries, new_store, new_subscription, queued, subscription
from tests.sync_support import jobs_of


def change(sub: WebhookSubscription, client_state: str) -> dict[str, Any]:
    """A Graph change notification item of ``sub``."""
    return {
        "subscriptionId": sub.provider_subscription_id,
        "clientState": client_state,
        "changeType": "created",
        "resource": "Users/x/Messages/y",
        "tenantId": "t",
        "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "id": uuid.uuid4().hex},
    }


def lifecycle(sub: WebhookSubscription, client_state: str, event: str) -> dict[str, Any]:
    """A Graph lifecycle notification item of ``sub``."""
    return {
        "subscriptionId": sub.provider_subscription_id,
        "clientState": client_state,
        "tenantId": "t",
        "lifecycleEvent": event,
    }


def outlook_store(engine: Engine) -> tuple[Any, WebhookSubscription, str]:
    store = new_store(engine, Provider.OUTLOOK)
    client_state = uuid.uuid4().hex
    return store, new_subscription(engine, store, client_state), client_state


@pytest.mark.parametrize("path", ["/webhooks/outlook", "/webhooks/outlook/lifecycle"])
def test_the_validation_handshake_echoes_the_decoded_token(
    path: str, client: httpx.Client, engine: Engine
) -> None:
    response = client.post(
        f"{path}?validationToken=Validation%3A%20Testing%20client%20application%26more",
        headers={"Content-Type": "text/plain"},
    )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "Validation: Testing client application&more"


def test_a_body_mixing_two_stores_enqueues_one_sync_per_store(
    client: httpx.Client, engine: Engine
) -> None:
    store_a, sub_a, state_a = outlook_store(engine)
    store_b, sub_b, state_b = outlook_store(engine)
    items = [change(sub_a, state_a), change(sub_b, state_b), change(sub_a, state_a)]

    response = client.post("/webhooks/outlook", json={"value": items})

    assert response.status_code == 202
    assert response.json() == {"accepted": 3, "ignored": 0}
    for store, sub in ((store_a, sub_a), (store_b, sub_b)):
        [job] = jobs_of(engine, store.id)
        assert job.trigger is SyncTrigger.WEBHOOK
        [row] = deliveries(engine, webhook_id=sub.provider_subscription_id)
        assert (row.success, row.response_code, row.store_id) == (True, 202, store.id)
        assert row.webhook_type == "outlook_notification"
        assert subscription(engine, sub.id).last_notification_at is not None


def test_a_wrong_client_state_alone_is_acknowledged_unlogged_and_nothing_enqueued(
    client: httpx.Client, engine: Engine
) -> None:
    store, sub, _state = outlook_store(engine)

    response = client.post("/webhooks/outlook", json={"value": [change(sub, "forged")]})

    # The same answer as for an unknown subscription: a forger learns nothing.
    assert (response.status_code, response.json()) == (202, {"accepted": 0, "ignored": 1})
    assert jobs_of(engine, store.id) == []
    assert deliveries(engine, webhook_id=sub.provider_subscription_id) == []
    assert subscription(engine, sub.id).last_notification_at is None


def test_a_body_mixing_valid_and_invalid_items_processes_the_valid_ones(
    client: httpx.Client, engine: Engine
) -> None:
    good_store, good, good_state = outlook_store(engine)
    bad_store, bad, _bad_state = outlook_store(engine)
    unknown = {"subscriptionId": str(uuid.uuid4()), "clientState": "x"}
    items = [change(bad, "forged"), change(good, good_state), unknown, "not an object"]

    response = client.post("/webhooks/outlook", json={"value": items})

    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "ignored": 3}
    assert len(jobs_of(engine, good_store.id)) == 1
    assert jobs_of(engine, bad_store.id) == []
    [good_row] = deliveries(engine, webhook_id=good.provider_subscription_id)
    assert (good_row.success, good_row.response_code) == (True, 202)
    # Unverified items (forged clientState, unknown subscription) are never logged.
    assert deliveries(engine, webhook_id=bad.provider_subscription_id) == []
    assert deliveries(engine, webhook_id=unknown["subscriptionId"]) == []


#: A subscription id no row has, fixed: pytest-xdist needs equal test ids on every worker.
UNKNOWN_SUBSCRIPTION = uuid.UUID("6e1b9a47-3c2d-4f85-a0e7-8b4d2f6c1a95")


@pytest.mark.parametrize(
    "body",
    [
        b"{nope",
        b"\xff\xfe",
        {"value": "x"},
        {"value": []},
        {"value": [{"clientState": "x"}]},
        {"value": [{"subscriptionId": "nope\u0000", "clientState": "x"}]},
        # A lone surrogate, escaped in JSON (valid JSON, not encodable as UTF-8).
        b'{"value": [{"subscriptionId": "%s", "clientState": "\\ud800"}]}'
        % str(UNKNOWN_SUBSCRIPTION).encode(),
        b'{"value": [{"subscriptionId": "\\ud800", "clientState": "x"}]}',
    ],
)
def test_a_body_that_can_never_be_processed_is_acknowledged_and_not_logged(
    body: Any, client: httpx.Client, engine: Engine
) -> None:
    before = {r.id for r in deliveries(engine)}

    if isinstance(body, bytes):
        response = client.post("/webhooks/outlook", content=body)
    else:
        response = client.post("/webhooks/outlook", json=body)

    assert response.status_code == 202
    assert [r for r in deliveries(engine) if r.id not in before] == []


@pytest.mark.parametrize(
    ("event", "task"),
    [
        ("reauthorizationRequired", "tasks.webhooks.reauthorize_subscription"),
        ("subscriptionRemoved", "tasks.webhooks.recreate_subscription"),
    ],
)
def test_a_lifecycle_event_publishes_its_task(
    event: str, task: str, client: httpx.Client, engine: Engine, redis_client: redis.Redis
) -> None:
    store, sub, state = outlook_store(engine)
    items = [lifecycle(sub, state, event), lifecycle(sub, state, event)]  # once per body

    response = client.post("/webhooks/outlook/lifecycle", json={"value": items})

    assert response.status_code == 202
    published = [(name, args) for _raw, name, args in queued(redis_client, "webhooks")]
    assert published.count((task, [str(sub.id)])) == 1
    assert jobs_of(engine, store.id) == []
    [row] = deliveries(engine, webhook_id=sub.provider_subscription_id)
    assert (row.success, row.response_code, row.webhook_type) == (True, 202, "outlook_lifecycle")


def test_a_missed_event_requests_a_resync(client: httpx.Client, engine: Engine) -> None:
    store, sub, state = outlook_store(engine)

    response = client.post(
        "/webhooks/outlook/lifecycle", json={"value": [lifecycle(sub, state, "missed")]}
    )

    assert response.status_code == 202
    [job] = jobs_of(engine, store.id)
    assert job.trigger is SyncTrigger.RESYNC


def test_a_lifecycle_event_with_a_wrong_client_state_publishes_nothing(
    client: httpx.Client, engine: Engine, redis_client: redis.Redis
) -> None:
    _store, sub, _state = outlook_store(engine)
    item = lifecycle(sub, "forged", "subscriptionRemoved")

    response = client.post("/webhooks/outlook/lifecycle", json={"value": [item]})

    assert (response.status_code, response.json()) == (202, {"accepted": 0, "ignored": 1})
    assert all(args != [str(sub.id)] for _r, _n, args in queued(redis_client, "webhooks"))


def test_an_unknown_lifecycle_event_is_acknowledged_and_logged_as_ignored(
    client: httpx.Client, engine: Engine, redis_client: redis.Redis
) -> None:
    store, sub, state = outlook_store(engine)

    response = client.post(
        "/webhooks/outlook/lifecycle", json={"value": [lifecycle(sub, state, "exploded")]}
    )

    assert (response.status_code, response.json()) == (202, {"accepted": 0, "ignored": 1})
    assert all(args != [str(sub.id)] for _r, _n, args in queued(redis_client, "webhooks"))
    assert jobs_of(engine, store.id) == []
    [row] = deliveries(engine, webhook_id=sub.provider_subscription_id)
    assert (row.success, row.response_code, row.store_id) == (False, 202, store.id)
    assert row.error_message == (
        "ignored (unknown_event): unknown or missing lifecycleEvent [1 of 1 items]"
    )


@pytest.mark.parametrize("token", ["", "a%00b", "line%0Abreak"])
def test_a_handshake_with_an_unusable_token_is_refused(token: str, client: httpx.Client) -> None:
    # The handshake is Graph's synchronous call at subscription creation: a 400 fails the
    # creation (nothing is retried), where echoing would only fail Graph's comparison later.
    response = client.post(f"/webhooks/outlook?validationToken={token}")

    assert (response.status_code, response.json()) == (
        400,
        {"error": "validationToken is empty or not printable"},
    )
