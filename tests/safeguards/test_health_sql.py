"""The health score in SQL (Beat's chunk statement) gives the Python reference's readings."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from models import Provider, SubscriptionStatus, WebhookHealthLog, WebhookSubscription
from safeguards.webhook_health import (
    CONSECUTIVE_FAILURES,
    EXPIRING_WITHOUT_RENEWAL,
    RENEWAL_FAILING,
    REPEATED_ERROR,
    SILENT_SUBSCRIPTION,
    assess,
    gather_chunk,
    repeated_error,
    thresholds_for,
)
from safeguards.webhook_health_sql import log_health_chunk
from syncguard.db import service_session
from syncguard.settings import get_settings
from tests.factories import make_business, make_store

MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)

_DELIVERY = text(
    "INSERT INTO webhook_delivery_log (store_id, webhook_type, direction, success,"
    " error_message, created_at) VALUES (:store, 'notification', 'inbound', :ok, :error, :at)"
)
_SYNC = text(
    "INSERT INTO sync_jobs (store_id, kind, trigger, status, checkpoint, messages_upserted,"
    " finished_at) VALUES (:store, 'incremental', 'reconciliation', 'succeeded', '{}', 1, :at)"
)


@dataclass(frozen=True)
class Case:
    """One subscription's state: its row and its deliveries (minutes ago, ok, error)."""

    provider: Provider
    expires_in: timedelta | None
    status: SubscriptionStatus = SubscriptionStatus.ACTIVE
    renewal_failures: int = 0
    renewed_ago: timedelta | None = None
    notified_ago: timedelta | None = None
    deliveries: tuple[tuple[int, bool, str | None], ...] = ()
    synced_with_changes_ago: timedelta | None = None


CASES = {
    "fresh": Case(Provider.GMAIL, 3 * 24 * HOUR),
    "no_expiry": Case(Provider.OUTLOOK, None),
    "failing": Case(
        Provider.OUTLOOK,
        50 * MIN,
        renewal_failures=1,
        renewed_ago=HOUR,
        # newest first: six failures of one error, then a success, then an older failure
        deliveries=(
            *((m, False, "bad clientState") for m in range(1, 7)),
            (8, True, None),
            (9, False, "timeout"),
        ),
    ),
    # one failure short of the pattern (5 in a row by default)
    "four_failures": Case(
        Provider.GMAIL,
        2 * 24 * HOUR,
        deliveries=(*((m, False, "x") for m in range(1, 5)), (5, True, None)),
    ),
    "expiring_unrenewed": Case(
        Provider.OUTLOOK, 30 * MIN, renewal_failures=3, renewed_ago=10 * HOUR
    ),
    "expired": Case(
        Provider.GMAIL,
        -HOUR,
        status=SubscriptionStatus.EXPIRED,
        deliveries=((5, True, None), (6, True, None)),
    ),
    "silent": Case(
        Provider.GMAIL, 2 * 24 * HOUR, notified_ago=8 * HOUR, synced_with_changes_ago=HOUR
    ),
    # a tie of two errors (the newest seen first wins), a success newest, empty error ignored
    "tied_errors": Case(
        Provider.OUTLOOK,
        20 * HOUR,
        deliveries=(
            (1, True, None),
            (2, False, "b"),
            (3, False, "a"),
            (4, False, "b"),
            (5, False, "a"),
            (6, False, ""),
            (7, False, "a"),
            (8, False, "b"),
        ),
    ),
}


def _seed(session: Session, now: datetime) -> dict[str, uuid.UUID]:
    business = make_business(session)
    ids = {}
    for name, case in CASES.items():
        store = make_store(session, business, case.provider)
        sub = WebhookSubscription(
            store_id=store.id,
            business_id=business.id,
            provider=case.provider,
            provider_subscription_id=f"sub-{store.id}",
            resource="me/messages",
            expires_at=None if case.expires_in is None else now + case.expires_in,
            status=case.status,
            consecutive_renewal_failures=case.renewal_failures,
            last_renewed_at=None if case.renewed_ago is None else now - case.renewed_ago,
            last_notification_at=None if case.notified_ago is None else now - case.notified_ago,
            created_at=now - 12 * HOUR,
        )
        session.add(sub)
        session.flush()
        ids[name] = sub.id
        for minutes, ok, error in case.deliveries:
            at = now - minutes * MIN
            session.execute(_DELIVERY, {"store": store.id, "ok": ok, "error": error, "at": at})
        if case.synced_with_changes_ago is not None:
            session.execute(_SYNC, {"store": store.id, "at": now - case.synced_with_changes_ago})
    return ids


def _approx(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _approx(v) for k, v in value.items()}
    if isinstance(value, float) and not isinstance(value, bool):
        return pytest.approx(value, rel=1e-9, abs=1e-6)
    return value


def test_the_sql_chunk_logs_the_python_reference_readings(engine: Engine) -> None:
    # Given subscriptions in every state the score and the five patterns distinguish
    settings = get_settings()
    with service_session(engine) as session:
        now = session.execute(select(func.now())).scalar_one()
        ids = _seed(session, now)
    mine = sorted(ids.values())
    after, last = uuid.UUID(int=mine[0].int - 1), mine[-1]

    # When the Python reference scores them and the SQL statement logs them, as of one instant
    with service_session(engine) as session:
        gathered = gather_chunk(session, now, settings.health_window_s, ids=mine, limit=100)
        reference = {
            g.subscription_id: (g, assess(g.inputs, thresholds_for(g.provider))) for g in gathered
        }
        outcome = log_health_chunk(session, now, after=after, last=last, limit=10_000)
    with service_session(engine) as session:
        logged = {
            row.subscription_id: row
            for row in session.scalars(
                select(WebhookHealthLog).where(
                    WebhookHealthLog.subscription_id.in_(mine), WebhookHealthLog.checked_at == now
                )
            )
        }

    # Then every reading matches: score, rate, counts, patterns and details
    assert set(logged) == set(reference) == set(mine)
    for sub_id, (g, reading) in reference.items():
        row = logged[sub_id]
        assert row.health_score == pytest.approx(reading.score, rel=1e-9, abs=1e-12), sub_id
        assert row.success_rate == _approx(reading.success_rate)
        assert (row.deliveries_total, row.deliveries_failed) == (
            g.inputs.deliveries_total,
            g.inputs.deliveries_failed,
        )
        expiry = g.inputs.seconds_to_expiry
        assert row.seconds_to_expiry == (None if expiry is None else int(expiry))
        assert row.renewal_failures == g.inputs.renewal_failures
        assert row.failure_patterns == reading.patterns
        assert row.details["components"] == _approx(reading.components)
        assert row.details["most_common_error"] == repeated_error(g.inputs.error_messages, 1)
        assert row.details["status"] == g.status
        inputs = row.details["inputs"]
        assert inputs["mailbox_changed_since_notification"] == (
            g.inputs.mailbox_changed_since_notification
        )
        for name in ("seconds_to_expiry", "seconds_since_renewal", "seconds_since_notification"):
            assert inputs[name] == _approx(getattr(g.inputs, name)), name
    # ...the cases cover every pattern (so the comparison above compared each one)
    found = {p for _, r in reference.values() for p in r.patterns}
    assert found == {
        CONSECUTIVE_FAILURES,
        REPEATED_ERROR,
        EXPIRING_WITHOUT_RENEWAL,
        SILENT_SUBSCRIPTION,
        RENEWAL_FAILING,
    }
    assert logged[ids["tied_errors"]].details["most_common_error"] == "b"
    # ...and the statement returns exactly the ones to renew
    below = sorted(s for s, (_, r) in reference.items() if r.score < settings.health_renew_below)
    assert [s for s in outcome.unhealthy if s in ids.values()] == below
    assert below and len(below) < len(mine)
    assert outcome.checked >= len(mine)
