"""POST /webhooks/outlook[/lifecycle]: handshake, mixed bodies, clientState, lifecycle events."""

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
    assert response.json() == {"accepted": 3, "refused": 0}
    for store, sub in ((store_a, sub_a), (store_b, sub_b)):
        [job] = jobs_of(engine, store.id)
        assert job.trigger is SyncTrigger.WEBHOOK
        [row] = deliveries(engine, webhook_id=sub.provider_subscription_id)
        assert (row.success, row.response_code, row.store_id) == (True, 202, store.id)
        assert row.webhook_type == "outlook_notification"
        assert subscription(engine, sub.id).last_notification_at is not None


def test_a_wrong_client_state_alone_is_refused_with_403_and_nothing_enqueued(
    client: httpx.Client, engine: Engine
) -> None:
    store, sub, _state = outlook_store(engine)

    response = client.post("/webhooks/outlook", json={"value": [change(sub, "forged")]})

    assert (response.status_code, response.json()) == (403, {"error": "clientState does not match"})
    assert jobs_of(engine, store.id) == []
    [row] = deliveries(engine, webhook_id=sub.provider_subscription_id)
    assert (row.success, row.response_code) == (False, 403)
    assert "forged" not in (row.error_message or "")
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
    assert response.json() == {"accepted": 1, "refused": 3}
    assert len(jobs_of(engine, good_store.id)) == 1
    assert jobs_of(engine, bad_store.id) == []
    [bad_row] = deliveries(engine, webhook_id=bad.provider_subscription_id)
    assert (bad_row.success, bad_row.response_code) == (False, 202)
    assert bad_row.error_message == "1 of 1 items refused: clientState does not match"
    [unknown_row] = deliveries(engine, webhook_id=unknown["subscriptionId"])
    assert unknown_row.error_message == "1 of 1 items refused: unknown subscription"


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"{nope", 400, "malformed JSON body"),
        ({"value": "x"}, 400, "body lacks a value array"),
        ({"value": []}, 400, "value array is empty"),
        ({"value": [{"clientState": "x"}]}, 400, "item lacks a subscriptionId"),
        (
            {"value": [{"subscriptionId": "nope\u0000", "clientState": "x"}]},
            400,
            "item lacks a subscriptionId",
        ),
        (
            # A lone surrogate, escaped in JSON (valid JSON, not encodable as UTF-8).
            b'{"value": [{"subscriptionId": "%s", "clientState": "\\ud800"}]}'
            % str(uuid.uuid4()).encode(),
            404,
            "unknown subscription",
        ),
    ],
)
def test_a_bad_body_is_refused_and_logged(
    body: Any, status: int, reason: str, client: httpx.Client, engine: Engine
) -> None:
    before = {r.id for r in deliveries(engine)}

    if isinstance(body, bytes):
        response = client.post("/webhooks/outlook", content=body)
    else:
        response = client.post("/webhooks/outlook", json=body)

    assert (response.status_code, response.json()) == (status, {"error": reason})
    [row] = [r for r in deliveries(engine) if r.id not in before]
    assert (row.success, row.response_code) == (False, status)
    assert reason in (row.error_message or "")


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

    assert response.status_code == 403
    assert all(args != [str(sub.id)] for _r, _n, args in queued(redis_client, "webhooks"))


def test_an_unknown_lifecycle_event_is_refused(client: httpx.Client, engine: Engine) -> None:
    _store, sub, state = outlook_store(engine)

    response = client.post(
        "/webhooks/outlook/lifecycle", json={"value": [lifecycle(sub, state, "exploded")]}
    )

    assert response.json() == {"error": "unknown or missing lifecycleEvent"}
    assert response.status_code == 400
