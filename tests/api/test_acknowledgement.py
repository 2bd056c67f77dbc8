"""Acknowledgement rules of the webhook receivers, through the real API, PostgreSQL and Redis.

An authenticated notification that can never be processed is acknowledged (a status the sender
treats as delivered), logged as ignored, counted in Prometheus, and enqueues nothing; a sender
that is not authenticated is refused without a trace in the delivery log; our own outage is a
503 so the sender retries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from sqlalchemy import Engine, delete, func, select, update

from models import Provider, Store, StoreStatus, SyncJob, SyncJobStatus
from providers.emulator.runner import free_port
from syncguard.db import service_session
from tests.api.conftest import (
    SERVICE_ACCOUNT,
    TEST_KID,
    deliveries,
    new_store,
    new_subscription,
    push_body,
    queued,
    sign_push_token,
)
from tests.api.test_outlook import change, lifecycle
from tests.api.test_prometheus import Samples, sample, scrape
from tests.sync_support import jobs_of
from tests.worker import stop

DELIVERIES = "syncguard_webhook_deliveries_total"
IGNORED = "syncguard_webhook_notifications_ignored_total"
GMAIL = {"provider": "gmail", "kind": "gmail_push"}
GRAPH = {"provider": "outlook", "kind": "outlook_notification"}


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return sample(after, name, **labels) - sample(before, name, **labels)


def all_jobs(engine: Engine) -> int:
    with service_session(engine) as session:
        return session.execute(select(func.count()).select_from(SyncJob)).scalar_one()


def set_status(engine: Engine, store_id: uuid.UUID, status: StoreStatus) -> None:
    with service_session(engine) as session:
        session.execute(update(Store).where(Store.id == store_id).values(status=status))


def signed_push(
    client: httpx.Client, url: str, key: rsa.RSAPrivateKey, body: Any
) -> httpx.Response:
    token = sign_push_token(key, f"{url}/webhooks/gmail")
    return client.post("/webhooks/gmail", json=body, headers={"Authorization": f"Bearer {token}"})


def test_a_verified_push_for_a_mailbox_no_store_has_is_acknowledged_logged_and_counted(
    client: httpx.Client,
    api_url: str,
    engine: Engine,
    push_key: rsa.RSAPrivateKey,
    redis_client: redis.Redis,
) -> None:
    # Given a correctly signed push for an address no store has (the failing input)
    body = push_body("gone@example.com", history_id=1234)
    jobs_before, queue_before = all_jobs(engine), len(queued(redis_client, "sync"))
    before = scrape(client)

    # When Pub/Sub delivers it
    response = signed_push(client, api_url, push_key, body)

    # Then it is acknowledged (204 is in Pub/Sub's ack set: 102, 200, 201, 202, 204), not
    # refused with 404 (which Pub/Sub would redeliver for up to 7 days)
    assert response.status_code in {102, 200, 201, 202, 204}
    assert response.status_code == 204
    [row] = deliveries(engine, webhook_id=body["message"]["messageId"])
    assert (row.success, row.response_code, row.store_id) == (False, 204, None)
    assert row.error_message == "ignored (unknown_mailbox): no store has this mailbox address"
    after = scrape(client)
    assert moved(before, after, DELIVERIES, status_class="2xx", outcome="ignored", **GMAIL) == 1
    assert moved(before, after, IGNORED, reason="unknown_mailbox", **GMAIL) == 1
    assert (all_jobs(engine), len(queued(redis_client, "sync"))) == (jobs_before, queue_before)


@pytest.mark.parametrize(
    "status", [StoreStatus.PAUSED, StoreStatus.DISABLED, StoreStatus.NEEDS_REAUTH]
)
def test_a_verified_push_for_an_inactive_store_is_acknowledged_and_logged(
    status: StoreStatus,
    client: httpx.Client,
    api_url: str,
    engine: Engine,
    push_key: rsa.RSAPrivateKey,
) -> None:
    store = new_store(engine, Provider.GMAIL)
    set_status(engine, store.id, status)
    body = push_body(store.mailbox_address)
    before = scrape(client)

    response = signed_push(client, api_url, push_key, body)

    assert response.status_code == 204
    assert jobs_of(engine, store.id) == []
    [row] = deliveries(engine, webhook_id=body["message"]["messageId"])
    assert (row.success, row.response_code, row.store_id) == (False, 204, store.id)
    assert row.error_message == f"ignored (store_inactive): store is {status.value}"
    assert moved(before, scrape(client), IGNORED, reason="store_inactive", **GMAIL) == 1


def test_a_verified_push_for_a_deleted_store_is_acknowledged_as_unknown(
    client: httpx.Client, api_url: str, engine: Engine, push_key: rsa.RSAPrivateKey
) -> None:
    store = new_store(engine, Provider.GMAIL)
    with service_session(engine) as session:
        session.execute(delete(Store).where(Store.id == store.id))
    body = push_body(store.mailbox_address)

    response = signed_push(client, api_url, push_key, body)

    assert response.status_code == 204
    [row] = deliveries(engine, webhook_id=body["message"]["messageId"])
    assert (row.success, row.store_id) == (False, None)
    assert row.error_message == "ignored (unknown_mailbox): no store has this mailbox address"


def test_undecodable_data_is_acknowledged_and_counted_as_malformed(
    client: httpx.Client, api_url: str, engine: Engine, push_key: rsa.RSAPrivateKey
) -> None:
    body = {"message": {"data": "%%% not base64 %%%", "messageId": uuid.uuid4().hex}}
    before = scrape(client)

    response = signed_push(client, api_url, push_key, body)

    assert response.status_code == 204
    [row] = deliveries(engine, webhook_id=body["message"]["messageId"])
    assert row.error_message == "ignored (malformed): message.data is not valid base64"
    assert moved(before, scrape(client), IGNORED, reason="malformed", **GMAIL) == 1


def test_an_unauthenticated_push_is_refused_without_a_trace_and_counted(
    client: httpx.Client, engine: Engine
) -> None:
    store = new_store(engine, Provider.GMAIL)
    body = push_body(store.mailbox_address)
    before_rows = {r.id for r in deliveries(engine)}
    before = scrape(client)

    response = client.post("/webhooks/gmail", json=body, headers={"Authorization": "Bearer x.y"})

    assert (response.status_code, response.json()) == (401, {"error": "push token malformed"})
    assert jobs_of(engine, store.id) == []
    assert [r for r in deliveries(engine) if r.id not in before_rows] == []
    after = scrape(client)
    assert moved(before, after, DELIVERIES, status_class="4xx", outcome="refused", **GMAIL) == 1


def test_a_graph_notification_for_an_unknown_subscription_is_acknowledged_and_counted(
    client: httpx.Client, engine: Engine, redis_client: redis.Redis
) -> None:
    unknown = {"subscriptionId": str(uuid.uuid4()), "clientState": "whatever"}
    jobs_before, queue_before = all_jobs(engine), len(queued(redis_client, "sync"))
    before = scrape(client)

    response = client.post("/webhooks/outlook", json={"value": [unknown]})

    assert (response.status_code, response.json()) == (202, {"accepted": 0, "ignored": 1})
    assert deliveries(engine, webhook_id=unknown["subscriptionId"]) == []  # unverified: no row
    after = scrape(client)
    assert moved(before, after, DELIVERIES, status_class="2xx", outcome="ignored", **GRAPH) == 1
    assert moved(before, after, IGNORED, reason="unverified", **GRAPH) == 1
    assert (all_jobs(engine), len(queued(redis_client, "sync"))) == (jobs_before, queue_before)


def test_a_graph_batch_with_bad_items_acknowledges_and_processes_the_good_ones(
    client: httpx.Client, engine: Engine
) -> None:
    # Given a batch: a good item, one for a paused store, and an unparseable item
    good_store = new_store(engine, Provider.OUTLOOK)
    good = new_subscription(engine, good_store, "good-state")
    paused_store = new_store(engine, Provider.OUTLOOK)
    paused = new_subscription(engine, paused_store, "paused-state")
    set_status(engine, paused_store.id, StoreStatus.PAUSED)
    items = [change(paused, "paused-state"), 42, change(good, "good-state")]
    before = scrape(client)

    response = client.post("/webhooks/outlook", json={"value": items})

    # Then the batch is acknowledged, the good item is processed, the others only ignored
    assert (response.status_code, response.json()) == (202, {"accepted": 1, "ignored": 2})
    assert len(jobs_of(engine, good_store.id)) == 1
    assert jobs_of(engine, paused_store.id) == []
    [good_row] = deliveries(engine, webhook_id=good.provider_subscription_id)
    assert (good_row.success, good_row.response_code) == (True, 202)
    [paused_row] = deliveries(engine, webhook_id=paused.provider_subscription_id)
    assert (paused_row.success, paused_row.response_code) == (False, 202)
    assert paused_row.error_message == "ignored (store_inactive): store is paused [1 of 1 items]"
    after = scrape(client)
    assert moved(before, after, DELIVERIES, status_class="2xx", outcome="processed", **GRAPH) == 1
    assert moved(before, after, IGNORED, reason="store_inactive", **GRAPH) == 1
    assert moved(before, after, IGNORED, reason="malformed", **GRAPH) == 1


def test_a_missed_event_for_a_paused_store_requests_no_resync(
    client: httpx.Client, engine: Engine
) -> None:
    store = new_store(engine, Provider.OUTLOOK)
    sub = new_subscription(engine, store, "state")
    set_status(engine, store.id, StoreStatus.PAUSED)

    response = client.post(
        "/webhooks/outlook/lifecycle", json={"value": [lifecycle(sub, "state", "missed")]}
    )

    assert (response.status_code, response.json()) == (202, {"accepted": 0, "ignored": 1})
    assert jobs_of(engine, store.id) == []
    [row] = deliveries(engine, webhook_id=sub.provider_subscription_id)
    assert (row.success, row.webhook_type) == (False, "outlook_lifecycle")


# --- our own outage: the real API process with a dependency pointed at a closed port ---

#: Port 1: nothing listens there, so every connection is refused at once.
CLOSED = "127.0.0.1:1"


@pytest.fixture
def api_process(
    request: pytest.FixtureRequest, push_key: rsa.RSAPrivateKey, tmp_path: Path
) -> Iterator[str]:
    """A separate uvicorn process of the API whose ``request.param`` server is unreachable."""
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(push_key.public_key(), as_dict=True)
    jwk.update(kid=TEST_KID, alg="RS256", use="sig")
    env = {
        **os.environ,
        "SYNCGUARD_GMAIL_PUSH_KEYS": json.dumps({"keys": [jwk]}),
        "SYNCGUARD_GMAIL_PUSH_SERVICE_ACCOUNT": SERVICE_ACCOUNT,
    }
    if request.param == "database":
        env["DATABASE_URL"] = f"postgresql+psycopg://postgres@{CLOSED}/nowhere"
    elif request.param == "broker":  # the database and the safeguards' Redis stay up
        env["BROKER_URL"] = f"redis://{CLOSED}/0"
    else:
        env["REDIS_URL"] = env["BROKER_URL"] = f"redis://{CLOSED}/0"
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "api:create_app", "--factory"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    log_path = tmp_path / "api.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=5)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"API did not start:\n{log_path.read_text()[-3000:]}"
                    ) from None
                time.sleep(0.1)
        yield url
    finally:
        stop(proc)


@pytest.mark.parametrize("api_process", ["database", "redis"], indirect=True)
def test_our_own_outage_answers_503_so_the_sender_retries(
    api_process: str, engine: Engine, push_key: rsa.RSAPrivateKey
) -> None:
    # Given an active store whose push the API cannot serve (its database or Redis is down)
    store = new_store(engine, Provider.GMAIL)
    body = push_body(store.mailbox_address)
    sub_store = new_store(engine, Provider.OUTLOOK)
    sub = new_subscription(engine, sub_store, "state")

    with httpx.Client(base_url=api_process, timeout=30) as down:
        gmail = signed_push(down, api_process, push_key, body)
        graph = down.post("/webhooks/outlook", json={"value": [change(sub, "state")]})

    # Then both senders are told to retry, and nothing was enqueued
    for response in (gmail, graph):
        assert (response.status_code, response.json()) == (
            503,
            {"error": "temporarily unavailable"},
        )
    assert jobs_of(engine, store.id) == [] and jobs_of(engine, sub_store.id) == []


@pytest.mark.parametrize("api_process", ["broker"], indirect=True)
def test_a_broker_outage_after_the_commit_answers_503_and_leaves_the_job_to_the_sweep(
    api_process: str, engine: Engine, push_key: rsa.RSAPrivateKey
) -> None:
    # Given active stores whose notifications reach our database but not the broker
    store = new_store(engine, Provider.GMAIL)
    body = push_body(store.mailbox_address)
    sub_store = new_store(engine, Provider.OUTLOOK)
    sub = new_subscription(engine, sub_store, "state")

    with httpx.Client(base_url=api_process, timeout=30) as down:
        gmail = signed_push(down, api_process, push_key, body)
        graph = down.post("/webhooks/outlook", json={"value": [change(sub, "state")]})

    # Then both senders are told to retry: the job rows committed in the receivers' one
    # transaction stay queued for the recovery sweep (the ledger), and the delivery rows that
    # acknowledged them were withdrawn (the 503 is logged instead, naming no store)
    for response, store_id in ((gmail, store.id), (graph, sub_store.id)):
        assert response.status_code == 503
        [job] = jobs_of(engine, store_id)
        assert job.status == SyncJobStatus.QUEUED and job.celery_task_id is not None
        assert deliveries(engine, store_id=store_id) == []
