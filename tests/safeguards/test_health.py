"""Subscription health: the pure score and patterns, then a reading stored from real log rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select

from models import (
    Provider,
    SubscriptionStatus,
    SyncJob,
    SyncJobStatus,
    SyncKind,
    SyncTrigger,
    WebhookHealthLog,
    WebhookSubscription,
)
from safeguards import log_webhook_delivery
from safeguards.webhook_health import (
    CONSECUTIVE_FAILURES,
    EXPIRING_WITHOUT_RENEWAL,
    REPEATED_ERROR,
    SILENT_SUBSCRIPTION,
    HealthInputs,
    HealthThresholds,
    assess,
    delivery_component,
    detect_patterns,
    expiry_component,
    has_consecutive_failures,
    health_score,
    record_subscription_health,
    renewal_component,
    repeated_error,
)
from syncguard.db import service_session
from tests.factories import make_business, make_store

HOUR = 3600.0
THRESHOLDS = HealthThresholds(expiry_horizon_s=12 * HOUR)


def _inputs(**overrides: object) -> HealthInputs:
    base: dict[str, object] = {
        "deliveries_total": 0,
        "deliveries_failed": 0,
        "seconds_to_expiry": 48 * HOUR,
        "renewal_failures": 0,
        "seconds_since_renewal": HOUR,
        "seconds_since_notification": 60.0,
    }
    return HealthInputs(**{**base, **overrides})  # type: ignore[arg-type]


# --- the formula -----------------------------------------------------------------------------


def test_a_fresh_subscription_without_deliveries_is_fully_healthy() -> None:
    score, components = health_score(_inputs(), THRESHOLDS.expiry_horizon_s)
    assert score == 1.0
    assert components == {"delivery": 1.0, "expiry": 1.0, "renewal": 1.0}


def test_delivery_component_is_smoothed_towards_neutral() -> None:
    assert delivery_component(0, 0) == 1.0
    assert delivery_component(1, 1) == pytest.approx(2 / 3)  # one failure alone is not fatal
    assert delivery_component(100, 100) == pytest.approx(2 / 102)
    assert delivery_component(10, 5) == pytest.approx(7 / 12)


def test_expiry_component_falls_linearly_inside_the_horizon_and_is_zero_when_expired() -> None:
    horizon = 12 * HOUR
    assert expiry_component(24 * HOUR, horizon) == 1.0
    assert expiry_component(6 * HOUR, horizon) == pytest.approx(0.5)
    assert expiry_component(0.0, horizon) == 0.0
    assert expiry_component(-5.0, horizon) == 0.0
    assert expiry_component(None, horizon) == 0.0


def test_renewal_component_halves_per_consecutive_failure() -> None:
    assert [renewal_component(n) for n in range(4)] == [1.0, 0.5, 0.25, 0.125]


def test_score_is_the_product_of_its_components() -> None:
    inputs = _inputs(
        deliveries_total=8, deliveries_failed=3, seconds_to_expiry=3 * HOUR, renewal_failures=1
    )
    score, _ = health_score(inputs, 12 * HOUR)
    assert score == pytest.approx((7 / 10) * 0.25 * 0.5)


def test_an_expired_subscription_scores_zero_whatever_its_deliveries() -> None:
    score, _ = health_score(_inputs(deliveries_total=50, seconds_to_expiry=-1.0), 12 * HOUR)
    assert score == 0.0


# --- the patterns ----------------------------------------------------------------------------


def test_consecutive_failures_counts_only_the_newest_run() -> None:
    assert has_consecutive_failures([False] * 5 + [True], 5)
    assert not has_consecutive_failures([False] * 4 + [True] + [False] * 10, 5)
    assert not has_consecutive_failures([], 5)


def test_repeated_error_names_the_message_seen_often_enough() -> None:
    assert repeated_error(["timeout", "500", "timeout", "timeout"], 3) == "timeout"
    assert repeated_error(["timeout", "500", "timeout"], 3) is None
    assert repeated_error([], 3) is None


def test_expiring_without_renewal_needs_both_near_expiry_and_an_old_renewal() -> None:
    near_stale = _inputs(seconds_to_expiry=600.0, seconds_since_renewal=7 * HOUR)
    near_fresh = _inputs(seconds_to_expiry=600.0, seconds_since_renewal=60.0)
    far_stale = _inputs(seconds_to_expiry=5 * HOUR, seconds_since_renewal=7 * HOUR)
    assert EXPIRING_WITHOUT_RENEWAL in detect_patterns(near_stale, THRESHOLDS)
    assert EXPIRING_WITHOUT_RENEWAL not in detect_patterns(near_fresh, THRESHOLDS)
    assert EXPIRING_WITHOUT_RENEWAL not in detect_patterns(far_stale, THRESHOLDS)


def test_silent_subscription_needs_quiet_and_a_changing_mailbox() -> None:
    quiet_busy = _inputs(
        seconds_since_notification=7 * HOUR, mailbox_changed_since_notification=True
    )
    quiet_idle = _inputs(seconds_since_notification=7 * HOUR)
    recent_busy = _inputs(seconds_since_notification=60.0, mailbox_changed_since_notification=True)
    assert SILENT_SUBSCRIPTION in detect_patterns(quiet_busy, THRESHOLDS)
    assert SILENT_SUBSCRIPTION not in detect_patterns(quiet_idle, THRESHOLDS)
    assert SILENT_SUBSCRIPTION not in detect_patterns(recent_busy, THRESHOLDS)


def test_assess_reports_rate_score_and_patterns_together() -> None:
    inputs = _inputs(
        deliveries_total=6,
        deliveries_failed=5,
        recent_outcomes=[False] * 5 + [True],
        error_messages=["502 bad gateway"] * 5,
    )
    reading = assess(inputs, THRESHOLDS)
    assert reading.success_rate == pytest.approx(1 / 6)
    assert reading.score == pytest.approx(3 / 8)
    assert reading.patterns == [CONSECUTIVE_FAILURES, REPEATED_ERROR]


# --- storage ---------------------------------------------------------------------------------


def test_record_subscription_health_writes_a_row_from_real_delivery_rows(engine: Engine) -> None:
    with service_session(engine) as session:
        store = make_store(session, make_business(session), Provider.OUTLOOK)
        now = session.execute(select(func.now())).scalar_one()
        sub = WebhookSubscription(
            store_id=store.id,
            business_id=store.business_id,
            provider=Provider.OUTLOOK,
            provider_subscription_id=f"graph-{store.id}",
            resource="/me/mailFolders('inbox')/messages",
            expires_at=now + timedelta(hours=3),
            status=SubscriptionStatus.ACTIVE,
            consecutive_renewal_failures=1,
        )
        session.add(sub)
        # A sync that found new mail (the mailbox is active) though no notification came since.
        session.add(
            SyncJob(
                store_id=store.id,
                kind=SyncKind.INCREMENTAL,
                trigger=SyncTrigger.RECONCILIATION,
                status=SyncJobStatus.SUCCEEDED,
                checkpoint={},
                messages_upserted=2,
                finished_at=now + timedelta(minutes=1),
            )
        )
        session.flush()
        store_id, sub_id = store.id, sub.id
    log_webhook_delivery(store_id, "n-0", "outlook_notification", True, 202, None, 12)
    for i in range(4):
        log_webhook_delivery(
            store_id, f"n-{i + 1}", "outlook_notification", False, 400, "bad clientState", 3
        )

    later = datetime.now(UTC) + timedelta(hours=7)  # the log rows are 7 h old by then
    reading = record_subscription_health(sub_id)
    silent = record_subscription_health(sub_id, now=later)

    assert reading is not None and silent is not None
    with service_session(engine) as session:
        rows = session.scalars(
            select(WebhookHealthLog)
            .where(WebhookHealthLog.subscription_id == sub_id)
            .order_by(WebhookHealthLog.checked_at)
        ).all()
    first, second = rows
    assert first.store_id == store_id and first.business_id is not None
    assert (first.deliveries_total, first.deliveries_failed) == (5, 4)
    assert first.success_rate == pytest.approx(0.2)
    assert first.renewal_failures == 1
    assert 3 * 3600 - 60 < (first.seconds_to_expiry or 0) <= 3 * 3600
    # delivery (1+2)/(5+2), expiry 3 h of a 12 h horizon, one renewal failure.
    assert first.health_score == pytest.approx((3 / 7) * 0.25 * 0.5, rel=1e-2)
    assert first.failure_patterns == [REPEATED_ERROR]
    assert first.details["components"]["renewal"] == 0.5
    assert first.details["most_common_error"] == "bad clientState"
    # Seven hours on: nothing in the window, expired, silent while the mailbox changed.
    assert second.deliveries_total == 0 and second.health_score == 0.0
    assert SILENT_SUBSCRIPTION in second.failure_patterns
    assert EXPIRING_WITHOUT_RENEWAL in second.failure_patterns
