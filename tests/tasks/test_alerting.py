"""Alert evaluation over real tables and Redis, the Beat task, and the circuit listener."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, func, select, update

from beat_schedule import BEAT_SCHEDULE
from models import (
    Alert,
    AlertStatus,
    CircuitBreakerState,
    CircuitState,
    FailedJobArchive,
    Provider,
    ProviderRateLimit,
    Store,
    StoreStatus,
    SubscriptionStatus,
    WebhookHealthLog,
    WebhookSubscription,
)
from safeguards.alerts.rules import AlertThresholds
from safeguards.alerts.store import evaluate
from safeguards.circuit_breaker.breaker import record_circuit_breaker_result, reset_circuit_breaker
from safeguards.clock import ManualClock
from safeguards.dead_letter.archive import move_to_dead_letter_queue
from syncguard.db import service_session
from tasks import app
from tasks.alerting import _EVALUATION, _SCOPE, evaluate_alerts
from tests.factories import make_business, make_store


@dataclass
class Recorder:
    """A publisher that keeps what it was asked to announce (the real one is tested elsewhere)."""

    events: list[tuple[uuid.UUID, str, dict[str, Any]]] = field(default_factory=list)

    def __call__(self, business_id: uuid.UUID, event_type: str, data: dict[str, Any]) -> None:
        self.events.append((business_id, event_type, data))

    def keys_for(self, business_id: uuid.UUID, event_type: str = "alert.raised") -> list[str]:
        return sorted(
            d["dedup_key"] for b, t, d in self.events if b == business_id and t == event_type
        )


@dataclass
class Scenario:
    business_id: uuid.UUID
    circuit_store: uuid.UUID
    reauth_store: uuid.UUID
    subscription_id: uuid.UUID
    keys: list[str]


def unreviewed_total(engine: Engine) -> int:
    with service_session(engine) as session:
        return int(session.scalar(select(func.count()).where(~FailedJobArchive.reviewed)) or 0)


def build_scenario(engine: Engine) -> Scenario:
    """An open circuit, a store needing reauth, a low health score, a backlog, a denial counter."""
    with service_session(engine) as session:
        business = make_business(session)
        circuit_store, reauth_store = make_store(session, business), make_store(session, business)
        reauth_store.status, reauth_store.status_reason = StoreStatus.NEEDS_REAUTH, "revoked"
        session.add(
            CircuitBreakerState(
                business_id=business.id,
                store_id=circuit_store.id,
                circuit_name="gmail",
                state=CircuitState.OPEN,
                trip_count=1,
            )
        )
        subscription = WebhookSubscription(
            business_id=business.id,
            store_id=circuit_store.id,
            provider=Provider.GMAIL,
            resource="me",
            status=SubscriptionStatus.ACTIVE,
        )
        session.add(subscription)
        session.flush()
        session.add(health_row(subscription, 0.2))
        session.add(
            ProviderRateLimit(
                business_id=business.id, store_id=circuit_store.id, provider=Provider.GMAIL
            )
        )
    for n in range(3):
        move_to_dead_letter_queue(
            f"alert-test-{uuid.uuid4()}",
            "tasks.sync.sync_store",
            f"failure {n}",
            3,
            {},
            business_id=business.id,
        )
    b, c, r, s = business.id, circuit_store.id, reauth_store.id, subscription.id
    keys = [
        f"circuit_open:{c}:gmail",
        f"dead_letter_backlog:{b}",
        f"rate_limit_denials:{c}",
        f"store_needs_reauth:{r}",
        f"subscription_health_low:{s}",
    ]
    return Scenario(b, c, r, s, keys)


def health_row(subscription: WebhookSubscription, score: float) -> WebhookHealthLog:
    return WebhookHealthLog(
        business_id=subscription.business_id,
        store_id=subscription.store_id,
        subscription_id=subscription.id,
        health_score=score,
    )


def set_denials(engine: Engine, store_id: uuid.UUID, denied: int) -> None:
    with service_session(engine) as session:
        session.execute(
            update(ProviderRateLimit)
            .where(ProviderRateLimit.store_id == store_id)
            .values(denied_count=denied)
        )


def clear_conditions(engine: Engine, scenario: Scenario) -> None:
    with service_session(engine) as session:
        session.execute(
            update(CircuitBreakerState)
            .where(CircuitBreakerState.store_id == scenario.circuit_store)
            .values(state=CircuitState.CLOSED)
        )
        session.execute(
            update(Store).where(Store.id == scenario.reauth_store).values(status=StoreStatus.ACTIVE)
        )
        subscription = session.get(WebhookSubscription, scenario.subscription_id)
        assert subscription is not None
        session.add(health_row(subscription, 0.9))
        session.execute(
            update(FailedJobArchive)
            .where(FailedJobArchive.business_id == scenario.business_id)
            .values(reviewed=True)
        )


def open_keys(engine: Engine, business_id: uuid.UUID | None) -> list[str]:
    with service_session(engine) as session:
        statement = select(Alert.dedup_key).where(
            Alert.status == AlertStatus.OPEN,
            Alert.business_id.is_(None)
            if business_id is None
            else Alert.business_id == business_id,
        )
        return sorted(session.scalars(statement))


def test_an_evaluation_raises_each_condition_once_and_resolves_it_when_it_clears(
    engine: Engine, redis_client: redis.Redis
) -> None:
    # Given every condition at once, and an overall backlog just over its threshold
    before = unreviewed_total(engine)
    scenario = build_scenario(engine)
    thresholds = AlertThresholds(
        health_below=0.3,
        health_critical_below=0.1,
        denials_per_min_above=10.0,
        denial_sample_min_s=30.0,
        backlog_per_business_above=2,
        backlog_overall_above=before + 2,
    )
    clock, recorder = ManualClock(), Recorder()

    def run() -> Any:
        return evaluate(thresholds, publish=recorder, clock=clock, client=redis_client)

    # When evaluated: the denial counter has no baseline yet, so its rule waits
    first = run()
    # Then every table condition is raised and announced once
    table_keys = [k for k in scenario.keys if not k.startswith("rate_limit")]
    assert set(table_keys) <= set(first.raised)
    assert open_keys(engine, scenario.business_id) == table_keys
    assert "dead_letter_backlog:all" in open_keys(engine, None)
    # When denials rise by 60 over a minute and it is evaluated twice more
    set_denials(engine, scenario.circuit_store, 60)
    clock.advance(60)
    second = run()
    third = run()  # 0 s later: too short to measure, the denial alert is held
    # Then the denial alert is raised once; nothing is raised twice, nothing resolved
    assert f"rate_limit_denials:{scenario.circuit_store}" in second.raised
    assert not set(scenario.keys) & set(third.raised)
    assert not set(scenario.keys) & set(second.resolved + third.resolved)
    assert open_keys(engine, scenario.business_id) == scenario.keys
    assert recorder.keys_for(scenario.business_id) == scenario.keys
    with service_session(engine) as session:
        circuit = session.scalar(select(Alert).where(Alert.dedup_key == scenario.keys[0]))
        assert circuit is not None and circuit.occurrences == 3
    # When every condition clears (no new denials over the next minute)
    clear_conditions(engine, scenario)
    clock.advance(60)
    fourth = run()
    # Then each alert is resolved, none raised again, each resolution announced once
    assert set(scenario.keys) | {"dead_letter_backlog:all"} <= set(fourth.resolved)
    assert open_keys(engine, scenario.business_id) == []
    assert "dead_letter_backlog:all" not in open_keys(engine, None)
    assert recorder.keys_for(scenario.business_id) == scenario.keys
    assert recorder.keys_for(scenario.business_id, "alert.resolved") == scenario.keys
    # The system-wide backlog alert is for operators: resolved, never sent to a tenant
    assert all(d["dedup_key"] != "dead_letter_backlog:all" for _b, _t, d in recorder.events)
    resolved = [d for _b, t, d in recorder.events if t == "alert.resolved"]
    assert all(d["resolved_at"] >= d["raised_at"] and d["message"] for d in resolved)
    # A later evaluation resolves nothing more: no second announcement
    run()
    assert recorder.keys_for(scenario.business_id, "alert.resolved") == scenario.keys


def test_the_circuit_listener_alerts_at_once_and_resolves_on_close(engine: Engine) -> None:
    # Given a real store whose circuit trips (the listener was registered by tasks.alerting)
    with service_session(engine) as session:
        business = make_business(session)
        store_id = make_store(session, business).id
    circuit = f"alert-listener-{uuid.uuid4().hex[:6]}"
    key = f"circuit_open:{store_id}:{circuit}"
    for _ in range(5):
        record_circuit_breaker_result(store_id, circuit, False, failure_reason="timeout")
    # Then its alert is open without any evaluation
    assert open_keys(engine, business.id) == [key]
    # And closing the circuit resolves it
    reset_circuit_breaker(store_id, circuit)
    assert open_keys(engine, business.id) == []
    with service_session(engine) as session:
        row = session.scalar(select(Alert).where(Alert.dedup_key == key))
        assert row is not None and row.resolved_at is not None


def test_the_beat_task_evaluates_and_a_concurrent_run_is_skipped() -> None:
    assert BEAT_SCHEDULE["alerting.evaluate_alerts"]["task"] == evaluate_alerts.name
    assert evaluate_alerts.name in app.tasks
    # A run evaluates (the real rules, settings' thresholds)
    result = evaluate_alerts.apply().get()
    assert set(result) == {"raised", "firing", "resolved"}
    # While another run holds the lease, a second one does nothing
    owner = "test-holder"
    assert _EVALUATION.acquire(_SCOPE, owner)
    try:
        assert evaluate_alerts.apply().get() == {"skipped": True}
    finally:
        _EVALUATION.release(_SCOPE, owner)


@pytest.fixture(autouse=True)
def _no_leftover_lease() -> None:
    """A failed test must not leave the evaluation lease held for the next one."""
    _EVALUATION.release(_SCOPE, "test-holder")
