"""Alert rules without I/O; alert storage on real PostgreSQL, announcements through real Redis."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, delete, select

from models import Alert, AlertSeverity, AlertStatus, CircuitState, StoreStatus, WebhookEndpoint
from safeguards.alerts.rules import (
    AlertRule,
    AlertSpec,
    AlertThresholds,
    CircuitReading,
    DenialSample,
    StoreReading,
    SubscriptionScore,
    backlog_alert,
    circuit_alert,
    denial_rate_per_min,
    denial_step,
    keeps_baseline,
    reauth_alert,
    subscription_health_alert,
)
from safeguards.alerts.store import raise_alert, raise_alerts, resolve_alert
from syncguard.db import service_session
from syncguard.settings import get_settings
from tasks.outbound.delivery import publish_event, register_endpoint
from tasks.queues import WEBHOOKS
from tests.factories import make_business, make_store

THRESHOLDS = AlertThresholds(
    health_below=0.3,
    health_critical_below=0.1,
    denials_per_min_above=10.0,
    denial_sample_min_s=30.0,
    backlog_per_business_above=50,
    backlog_overall_above=500,
)
BUSINESS, STORE, SUBSCRIPTION = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


# --- rules, pure ---


def test_a_health_score_under_the_threshold_alerts_and_under_the_lower_one_is_critical() -> None:
    def score(value: float) -> AlertSpec | None:
        reading = SubscriptionScore(BUSINESS, STORE, SUBSCRIPTION, value, ("repeated_error",))
        return subscription_health_alert(reading, THRESHOLDS)

    assert score(0.3) is None
    warning, critical = score(0.29), score(0.05)
    assert warning is not None and warning.severity is AlertSeverity.WARNING
    assert critical is not None and critical.severity is AlertSeverity.CRITICAL
    assert warning.dedup_key == f"subscription_health_low:{SUBSCRIPTION}"
    assert warning.details["failure_patterns"] == ["repeated_error"]
    assert (warning.business_id, warning.store_id) == (BUSINESS, STORE)


@pytest.mark.parametrize(
    ("state", "fires"),
    [(CircuitState.OPEN, True), (CircuitState.HALF_OPEN, True), (CircuitState.CLOSED, False)],
)
def test_a_circuit_alerts_until_it_is_closed_again(state: CircuitState, fires: bool) -> None:
    spec = circuit_alert(CircuitReading(BUSINESS, STORE, "gmail", state, trip_count=2))
    assert (spec is not None) is fires
    if spec is not None:
        assert spec.dedup_key == f"circuit_open:{STORE}:gmail"
        assert spec.rule is AlertRule.CIRCUIT_OPEN and spec.details["trip_count"] == 2


def test_the_denial_rate_needs_a_baseline_and_a_long_enough_interval() -> None:
    assert denial_rate_per_min(None, DenialSample(5, 100.0), 30.0) is None
    assert denial_rate_per_min(DenialSample(5, 100.0), DenialSample(9, 110.0), 30.0) is None
    assert denial_rate_per_min(DenialSample(5, 100.0), DenialSample(35, 160.0), 30.0) == 30.0
    # A counter that went down (row recreated) restarts the baseline
    assert denial_rate_per_min(DenialSample(50, 100.0), DenialSample(3, 160.0), 30.0) is None


def test_a_short_interval_keeps_the_old_baseline() -> None:
    previous = DenialSample(5, 100.0)
    assert keeps_baseline(previous, DenialSample(9, 110.0), 30.0)
    assert not keeps_baseline(previous, DenialSample(9, 130.0), 30.0)
    assert not keeps_baseline(None, DenialSample(9, 110.0), 30.0)
    assert not keeps_baseline(previous, DenialSample(1, 110.0), 30.0)


def test_a_denial_step_fires_holds_and_moves_baselines() -> None:
    quiet, noisy, fresh = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    baselines = {quiet: DenialSample(10, 0.0), noisy: DenialSample(10, 0.0)}
    counts = [(BUSINESS, quiet, 15), (BUSINESS, noisy, 100), (BUSINESS, fresh, 7)]

    step = denial_step(counts, baselines, 60.0, THRESHOLDS)

    [spec] = step.firing
    assert spec.dedup_key == f"rate_limit_denials:{noisy}" and spec.details["denials_per_min"] == 90
    assert step.held == {f"rate_limit_denials:{fresh}"}
    assert step.baselines == {s: DenialSample(n, 60.0) for _b, s, n in counts}


def test_backlog_alerts_per_business_and_overall() -> None:
    assert backlog_alert(BUSINESS, 50, THRESHOLDS) is None
    mine = backlog_alert(BUSINESS, 51, THRESHOLDS)
    assert mine is not None and mine.dedup_key == f"dead_letter_backlog:{BUSINESS}"
    assert backlog_alert(None, 500, THRESHOLDS) is None
    overall = backlog_alert(None, 501, THRESHOLDS)
    assert overall is not None and overall.dedup_key == "dead_letter_backlog:all"
    assert overall.business_id is None and overall.details == {"unreviewed": 501, "threshold": 500}


def test_only_a_store_needing_reauthorisation_alerts_critically() -> None:
    for status in (StoreStatus.ACTIVE, StoreStatus.PAUSED, StoreStatus.DISABLED):
        assert reauth_alert(StoreReading(BUSINESS, STORE, status)) is None
    spec = reauth_alert(StoreReading(BUSINESS, STORE, StoreStatus.NEEDS_REAUTH, "revoked"))
    assert spec is not None and spec.severity is AlertSeverity.CRITICAL
    assert spec.dedup_key == f"store_needs_reauth:{STORE}" and spec.details["status_reason"]


def test_thresholds_come_from_settings() -> None:
    settings = get_settings()
    thresholds = AlertThresholds.from_settings()
    assert thresholds.health_below == settings.alert_health_below
    assert thresholds.backlog_overall_above == settings.alert_backlog_overall_above


# --- storage, real PostgreSQL; announcements counted on the real webhooks queue ---


@pytest.fixture
def tenant(engine: Engine) -> tuple[uuid.UUID, uuid.UUID]:
    with service_session(engine) as session:
        business = make_business(session)
        return business.id, make_store(session, business).id


@pytest.fixture
def endpoint(
    tenant: tuple[uuid.UUID, uuid.UUID], engine: Engine, redis_client: redis.Redis
) -> Iterator[uuid.UUID]:
    """A real endpoint of the tenant; its queued deliveries are removed afterwards."""
    endpoint_id, _ = register_endpoint(tenant[0], "http://127.0.0.1:9/alerts", ["alert.raised"])
    yield endpoint_id
    for raw in queued_deliveries(redis_client, endpoint_id):
        redis_client.lrem(webhooks_queue(), 0, raw)
    with service_session(engine) as session:
        session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id))


def webhooks_queue() -> str:
    return f"{get_settings().redis_prefix}{WEBHOOKS}"


def queued_deliveries(client: redis.Redis, endpoint_id: uuid.UUID) -> list[bytes]:
    """The raw broker messages waiting to deliver an event to ``endpoint_id``."""
    found = []
    for raw in client.lrange(webhooks_queue(), 0, -1):
        message = json.loads(raw)
        _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        if kwargs["endpoint_id"] == str(endpoint_id):
            found.append(raw)
    return found


def payloads(client: redis.Redis, endpoint_id: uuid.UUID) -> list[dict[str, Any]]:
    decoded = [
        json.loads(base64.b64decode(json.loads(r)["body"]))
        for r in queued_deliveries(client, endpoint_id)
    ]
    return [kwargs["payload"] for _args, kwargs, _embed in decoded]


def alert_rows(engine: Engine, dedup_key: str) -> list[Alert]:
    with service_session(engine) as session:
        statement = select(Alert).where(Alert.dedup_key == dedup_key).order_by(Alert.raised_at)
        return list(session.scalars(statement))


def reauth_spec(business_id: uuid.UUID, store_id: uuid.UUID) -> AlertSpec:
    spec = reauth_alert(StoreReading(business_id, store_id, StoreStatus.NEEDS_REAUTH, "revoked"))
    assert spec is not None
    return spec


def test_raising_twice_stores_one_alert_and_announces_it_once(
    tenant: tuple[uuid.UUID, uuid.UUID],
    endpoint: uuid.UUID,
    engine: Engine,
    redis_client: redis.Redis,
) -> None:
    # Given a condition raised once
    spec = reauth_spec(*tenant)
    first = raise_alert(spec, publish=publish_event)
    # When it is raised again while open
    second = raise_alert(spec, publish=publish_event)
    # Then one row with two occurrences, and one alert.raised delivery queued
    assert first.new and not second.new and first.id == second.id
    [row] = alert_rows(engine, spec.dedup_key)
    assert (row.status, row.occurrences, row.rule) == (AlertStatus.OPEN, 2, "store_needs_reauth")
    assert row.business_id == tenant[0] and row.last_seen_at > row.raised_at
    [payload] = payloads(redis_client, endpoint)
    assert payload["type"] == "alert.raised"
    assert payload["data"]["dedup_key"] == spec.dedup_key
    assert payload["data"]["alert_id"] == str(first.id)


def test_a_resolved_condition_that_returns_opens_a_new_alert(
    tenant: tuple[uuid.UUID, uuid.UUID],
    endpoint: uuid.UUID,
    engine: Engine,
    redis_client: redis.Redis,
) -> None:
    # Given an alert raised and resolved
    spec = reauth_spec(*tenant)
    first = raise_alert(spec, publish=publish_event)
    assert resolve_alert(spec.dedup_key) == first.id
    [resolved] = alert_rows(engine, spec.dedup_key)
    assert resolved.status is AlertStatus.RESOLVED and resolved.resolved_at is not None
    assert resolve_alert(spec.dedup_key) is None  # nothing open any more
    # When the condition returns
    again = raise_alert(spec, publish=publish_event)
    # Then a new row, announced again; the resolved one stays as it was
    assert again.new and again.id != first.id
    old, new = alert_rows(engine, spec.dedup_key)
    assert (old.status, new.status, new.occurrences) == (
        AlertStatus.RESOLVED,
        AlertStatus.OPEN,
        1,
    )
    assert len(payloads(redis_client, endpoint)) == 2


def test_a_system_alert_is_only_logged(caplog: pytest.LogCaptureFixture, engine: Engine) -> None:
    spec = backlog_alert(None, 10**9, THRESHOLDS)
    assert spec is not None
    published: list[object] = []
    try:
        with caplog.at_level("WARNING", logger="safeguards.alerts.store"):
            raised = raise_alert(spec, publish=lambda *event: published.append(event))
        assert raised.new and published == []
        assert any(spec.dedup_key in r.getMessage() for r in caplog.records)
    finally:
        resolve_alert(spec.dedup_key)


def test_two_evaluators_raising_one_key_at_once_make_one_row(
    tenant: tuple[uuid.UUID, uuid.UUID], engine: Engine
) -> None:
    # Given two threads that raise the same condition at the same moment, many times over
    spec = reauth_spec(*tenant)
    rounds, barrier = 20, threading.Barrier(2)
    outcomes: list[bool] = []
    lock = threading.Lock()

    def raise_repeatedly() -> None:
        for _ in range(rounds):
            barrier.wait()
            [raised] = raise_alerts([spec])
            with lock:
                outcomes.append(raised.new)

    threads = [threading.Thread(target=raise_repeatedly) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then one open row counts every raise, and exactly one raise created it
    [row] = alert_rows(engine, spec.dedup_key)
    assert row.occurrences == 2 * rounds
    assert outcomes.count(True) == 1
