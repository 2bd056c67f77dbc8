"""Subscription tasks against the emulator over HTTP, on a real worker, PostgreSQL and Redis."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from celery.result import AsyncResult
from fastapi import FastAPI, Request, Response
from sqlalchemy import Engine, func, select, update

from models import (
    Provider,
    Store,
    StoreStatus,
    SubscriptionStatus,
    SyncTrigger,
    WebhookHealthLog,
    WebhookSubscription,
)
from providers.base import parse_datetime
from providers.emulator.runner import EmulatorHandle, running_emulator, start_background
from safeguards.webhook_health import RENEWAL_FAILING, record_subscription_health
from syncguard.db import service_session
from tasks import app
from tasks.renewal import ensure_healthy_subscription, renew_expiring_subscriptions
from tasks.sync.reconcile import reconcile_stores
from tasks.webhooks import create_subscription, renew_subscription
from tests.providers import Mailbox
from tests.sync_support import connect_store, emulator_env, eventually, jobs_of
from tests.worker import running_worker

TIMEOUT_S = 30


class Receiver:
    """Our webhook endpoints as Graph sees them: echo the validation token, accept the rest."""

    def __init__(self) -> None:
        self.validations: list[str] = []
        self._lock = threading.Lock()
        self.app = FastAPI()
        self.app.post("/webhooks/outlook")(self._receive)
        self.app.post("/webhooks/outlook/lifecycle")(self._receive)

    async def _receive(self, request: Request) -> Response:
        token = request.query_params.get("validationToken")
        if token is None:
            return Response(status_code=202)
        with self._lock:
            self.validations.append(request.url.path)
        return Response(token, media_type="text/plain")


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver()
    url, server, thread = start_background(receiver.app)
    try:
        yield receiver, url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module", autouse=True)
def worker(emulator: EmulatorHandle, receiver: tuple[Receiver, str]) -> Iterator[None]:
    env = {
        **emulator_env(emulator),
        "SYNCGUARD_PUBLIC_BASE_URL": receiver[1],
        "SYNCGUARD_MAX_BACKOFF_S": "1",
        "SYNCGUARD_DEFER_HORIZON_S": "5",
    }
    with running_worker(concurrency=4, env=env):
        yield


def _subscribed(
    engine: Engine, emulator: EmulatorHandle, provider: Provider
) -> tuple[uuid.UUID, Mailbox, WebhookSubscription]:
    store_id, mailbox = connect_store(engine, emulator, provider)
    result = create_subscription.delay(str(store_id)).get(timeout=TIMEOUT_S)
    return store_id, mailbox, _row(engine, uuid.UUID(result["subscription_id"]))


def _row(engine: Engine, subscription_id: uuid.UUID) -> WebhookSubscription:
    with service_session(engine) as session:
        sub = session.get(WebhookSubscription, subscription_id)
        assert sub is not None
        return sub


def _rows_of(engine: Engine, store_id: uuid.UUID) -> list[WebhookSubscription]:
    with service_session(engine) as session:
        stmt = (
            select(WebhookSubscription)
            .where(WebhookSubscription.store_id == store_id)
            .order_by(WebhookSubscription.created_at)
        )
        return list(session.scalars(stmt))


def _set(engine: Engine, subscription_id: uuid.UUID, **values: Any) -> None:
    with service_session(engine) as session:
        session.execute(
            update(WebhookSubscription)
            .where(WebhookSubscription.id == subscription_id)
            .values(**values)
        )


def _db_now(engine: Engine) -> Any:
    with service_session(engine) as session:
        return session.execute(select(func.now())).scalar_one()


def test_graph_subscription_is_validated_and_only_its_client_state_hash_is_stored(
    engine: Engine, emulator: EmulatorHandle, receiver: tuple[Receiver, str]
) -> None:
    seen_before = len(receiver[0].validations)
    store_id, mailbox, sub = _subscribed(engine, emulator, Provider.OUTLOOK)

    [graph] = mailbox.state()["subscriptions"]
    assert graph["notificationUrl"] == f"{receiver[1]}/webhooks/outlook"
    assert graph["lifecycleNotificationUrl"] == f"{receiver[1]}/webhooks/outlook/lifecycle"
    assert sorted(receiver[0].validations[seen_before:]) == [
        "/webhooks/outlook",
        "/webhooks/outlook/lifecycle",
    ]
    client_state = graph["clientState"]
    assert 0 < len(client_state) <= 128
    assert sub.provider_subscription_id == graph["id"]
    assert sub.client_state_hash == hashlib.sha256(client_state.encode()).hexdigest()
    assert client_state not in repr(
        [getattr(sub, c.key) for c in WebhookSubscription.__mapper__.columns]
    )
    assert sub.expires_at == parse_datetime(graph["expirationDateTime"])
    assert sub.status is SubscriptionStatus.ACTIVE and sub.store_id == store_id


def test_gmail_watch_takes_its_expiry_from_the_answer(
    engine: Engine, emulator: EmulatorHandle
) -> None:
    _, mailbox, sub = _subscribed(engine, emulator, Provider.GMAIL)

    watch = mailbox.state()["watch"]
    assert watch is not None
    assert sub.expires_at is not None
    assert int(sub.expires_at.timestamp() * 1000) == watch["expiration_ms"]
    assert sub.provider_subscription_id is None and sub.client_state_hash is None
    assert sub.resource == "projects/syncguard/topics/gmail-push"


def test_renewing_a_subscription_near_expiry_extends_it(
    engine: Engine, emulator: EmulatorHandle
) -> None:
    _, mailbox, sub = _subscribed(engine, emulator, Provider.OUTLOOK)
    soon = _db_now(engine) + timedelta(minutes=10)
    _set(engine, sub.id, expires_at=soon)

    renew_subscription.delay(str(sub.id)).get(timeout=TIMEOUT_S)

    renewed = _row(engine, sub.id)
    [graph] = mailbox.state()["subscriptions"]
    assert renewed.renewal_count == 1 and renewed.last_renewed_at is not None
    assert renewed.expires_at is not None and renewed.expires_at > soon + timedelta(hours=24)
    assert renewed.expires_at == parse_datetime(graph["expirationDateTime"])
    assert renewed.consecutive_renewal_failures == 0


def test_a_failed_renewal_is_counted_on_the_row(engine: Engine, emulator: EmulatorHandle) -> None:
    _, mailbox, sub = _subscribed(engine, emulator, Provider.GMAIL)
    mailbox.post("revoke")

    result = renew_subscription.delay(str(sub.id))
    result.get(timeout=TIMEOUT_S, propagate=False)

    failed = eventually(
        lambda: (r := _row(engine, sub.id)).status is SubscriptionStatus.FAILED and r
    )
    assert result.state == "FAILURE"
    assert failed.consecutive_renewal_failures == 1 and failed.renewal_count == 0
    assert "AuthenticationFailure" in (failed.last_renewal_error or "")


def test_a_subscription_graph_forgot_is_recreated_and_the_store_resynced(
    engine: Engine, emulator: EmulatorHandle
) -> None:
    store_id, mailbox, old = _subscribed(engine, emulator, Provider.OUTLOOK)
    mailbox.control.post(f"/subscriptions/{old.provider_subscription_id}/expire").raise_for_status()

    assert renew_subscription.delay(str(old.id)).get(timeout=TIMEOUT_S) == {"recreating": True}

    rows = eventually(lambda: len(r := _rows_of(engine, store_id)) == 2 and r, TIMEOUT_S)
    retired, current = rows
    assert retired.id == old.id and retired.status is SubscriptionStatus.REMOVED
    assert retired.consecutive_renewal_failures == 1
    assert current.status is SubscriptionStatus.ACTIVE
    assert current.provider_subscription_id not in (None, old.provider_subscription_id)
    resyncs = eventually(
        lambda: [j for j in jobs_of(engine, store_id) if j.trigger is SyncTrigger.RESYNC]
    )
    assert len(resyncs) == 1


def test_beat_renews_exactly_the_subscriptions_inside_their_window(
    engine: Engine, emulator: EmulatorHandle
) -> None:
    now = _db_now(engine)
    graph_due = _subscribed(engine, emulator, Provider.OUTLOOK)[2]
    graph_later = _subscribed(engine, emulator, Provider.OUTLOOK)[2]
    gmail_due = _subscribed(engine, emulator, Provider.GMAIL)[2]
    gmail_fresh = _subscribed(engine, emulator, Provider.GMAIL)[2]
    _set(engine, graph_due.id, expires_at=now + timedelta(hours=1))  # inside the 12 h window
    _set(engine, gmail_due.id, created_at=now - timedelta(days=2))  # watched 2 days ago
    nearly_expired = record_subscription_health(graph_due.id)

    picked = set(renew_expiring_subscriptions.delay().get(timeout=TIMEOUT_S))

    assert {str(graph_due.id), str(gmail_due.id)} <= picked
    assert not {str(graph_later.id), str(gmail_fresh.id)} & picked
    for sub_id in (graph_due.id, gmail_due.id):
        eventually(lambda: _row(engine, sub_id).renewal_count == 1, TIMEOUT_S)  # noqa: B023
    assert _row(engine, graph_later.id).renewal_count == 0
    assert _row(engine, gmail_fresh.id).renewal_count == 0
    # The health log shows it: 1 h to expiry in a 12 h window scored low; renewed, it is whole.
    renewed = record_subscription_health(graph_due.id)
    assert nearly_expired is not None and renewed is not None
    assert nearly_expired.score < 0.1 < 0.9 < renewed.score


def test_reconciliation_enqueues_one_sync_per_active_store(
    engine: Engine, emulator: EmulatorHandle
) -> None:
    active = [connect_store(engine, emulator, p)[0] for p in (Provider.GMAIL, Provider.OUTLOOK)]
    paused = connect_store(engine, emulator, Provider.GMAIL)[0]
    with service_session(engine) as session:
        session.execute(update(Store).where(Store.id == paused).values(status=StoreStatus.PAUSED))

    sent = reconcile_stores.delay().get(timeout=TIMEOUT_S)
    assert sent["stores"] >= 2  # both active stores never synced: stale
    for chunk in sent["chunks"]:
        AsyncResult(chunk, app=app).get(timeout=TIMEOUT_S)

    for store_id in active:
        jobs = jobs_of(engine, store_id)
        assert [j.trigger for j in jobs] == [SyncTrigger.RECONCILIATION]
    assert jobs_of(engine, paused) == []


def test_a_sync_renews_an_expired_subscription_but_not_a_healthy_one(
    engine: Engine, emulator: EmulatorHandle
) -> None:
    store_id, _, sub = _subscribed(engine, emulator, Provider.OUTLOOK)
    assert ensure_healthy_subscription(store_id) is False

    _set(engine, sub.id, expires_at=_db_now(engine) - timedelta(minutes=1))

    assert ensure_healthy_subscription(store_id) is True
    assert ensure_healthy_subscription(store_id) is False  # one renewal per cooldown
    renewed = eventually(lambda: (r := _row(engine, sub.id)).renewal_count == 1 and r, TIMEOUT_S)
    assert renewed.expires_at is not None and renewed.expires_at > _db_now(engine)
    assert ensure_healthy_subscription(store_id) is False


def test_a_renewal_that_keeps_failing_lowers_the_health_score_and_is_named(
    engine: Engine, emulator: EmulatorHandle
) -> None:
    _, mailbox, sub = _subscribed(engine, emulator, Provider.OUTLOOK)
    healthy = record_subscription_health(sub.id)
    assert healthy is not None and RENEWAL_FAILING not in healthy.patterns

    mailbox.faults(server_error={"status": 503, "count": "always"})
    renew_subscription.delay(str(sub.id))
    eventually(lambda: _row(engine, sub.id).consecutive_renewal_failures >= 2, TIMEOUT_S)
    failing = record_subscription_health(sub.id)
    mailbox.faults()

    assert failing is not None and RENEWAL_FAILING in failing.patterns
    assert failing.score <= healthy.score * 0.25  # two failures in a row: a quarter at most
    with service_session(engine) as session:
        logged = session.scalars(
            select(WebhookHealthLog.failure_patterns)
            .where(WebhookHealthLog.subscription_id == sub.id)
            .order_by(WebhookHealthLog.checked_at)
        ).all()
    assert [RENEWAL_FAILING in p for p in logged] == [False, True]
