"""api.receipt: a Graph delivery's writes in one statement, all or nothing, on real PostgreSQL.

The receiver's HTTP tests (test_outlook.py) go through the one-statement path; these cover what
they cannot time: a store paused between the lookup and the write (the statement must leave
nothing behind, so the caller can roll back and take the per-store path), and that per-store
path itself.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from sqlalchemy import Engine, update

from api.intake import Intake
from api.lookups import subscriptions_touch
from api.outlook import _commit
from api.receipt import DeliveryRow, StoreChanged, write_receipt
from models import Provider, Store, StoreStatus, SyncTrigger
from syncguard.db import service_session, statement_connection
from tasks.sync.requests import PlannedSync
from tests.api.conftest import deliveries, new_store, new_subscription, subscription
from tests.api.test_outlook import change
from tests.sync_support import jobs_of


def _plan(store: Store) -> PlannedSync:
    return PlannedSync(store.id, uuid.uuid4(), str(uuid.uuid4()))


def _row(store: Store, graph_id: str | None) -> DeliveryRow:
    return DeliveryRow(store.id, graph_id, "outlook_notification", 202, None, True)


def test_one_statement_writes_every_job_touch_and_delivery_row(engine: Engine) -> None:
    stores = [new_store(engine, Provider.OUTLOOK) for _ in range(2)]
    subs = [new_subscription(engine, store, "state") for store in stores]
    plans = [_plan(store) for store in stores]

    with service_session(engine) as session:
        logged = write_receipt(
            session.connection(),
            [(plan, SyncTrigger.WEBHOOK) for plan in plans],
            subscriptions_touch({sub.id for sub in subs}),
            [
                _row(store, sub.provider_subscription_id)
                for store, sub in zip(stores, subs, strict=True)
            ],
            7,
        )

    for store, sub, plan in zip(stores, subs, plans, strict=True):
        [job] = jobs_of(engine, store.id)
        assert (job.id, job.celery_task_id, job.trigger) == (
            plan.job_id,
            plan.task_id,
            SyncTrigger.WEBHOOK,
        )
        [row] = deliveries(engine, webhook_id=sub.provider_subscription_id)
        assert (row.store_id, row.success, row.response_code, row.duration_ms) == (
            store.id,
            True,
            202,
            7,
        )
        assert row.id in logged
        assert subscription(engine, sub.id).last_notification_at is not None
    assert len(logged) == 2


def test_a_store_paused_since_the_lookup_raises_and_the_rollback_leaves_nothing(
    engine: Engine,
) -> None:
    active, paused = new_store(engine, Provider.OUTLOOK), new_store(engine, Provider.OUTLOOK)
    subs = [new_subscription(engine, store, "state") for store in (active, paused)]
    with service_session(engine) as session:
        session.execute(
            update(Store).where(Store.id == paused.id).values(status=StoreStatus.PAUSED)
        )

    raised = False
    try:
        with service_session(engine) as session:
            write_receipt(
                session.connection(),
                [(_plan(active), SyncTrigger.WEBHOOK), (_plan(paused), SyncTrigger.WEBHOOK)],
                subscriptions_touch({sub.id for sub in subs}),
                [
                    _row(s, sub.provider_subscription_id)
                    for s, sub in zip((active, paused), subs, strict=True)
                ],
                3,
            )
    except StoreChanged:
        raised = True

    assert raised
    for store, sub in zip((active, paused), subs, strict=True):
        assert jobs_of(engine, store.id) == []
        assert deliveries(engine, webhook_id=sub.provider_subscription_id) == []
        assert subscription(engine, sub.id).last_notification_at is None


def test_a_store_paused_since_the_lookup_writes_nothing_even_without_a_rollback(
    engine: Engine,
) -> None:
    # The receiver runs a one-store receipt on an autocommit connection (its own transaction):
    # the statement itself, not a rollback, must leave nothing behind.
    store = new_store(engine, Provider.OUTLOOK)
    sub = new_subscription(engine, store, "state")
    with service_session(engine) as session:
        session.execute(update(Store).where(Store.id == store.id).values(status=StoreStatus.PAUSED))

    with pytest.raises(StoreChanged), statement_connection(lambda c: None) as (connection, _):
        write_receipt(
            connection,
            [(_plan(store), SyncTrigger.WEBHOOK)],
            subscriptions_touch({sub.id}),
            [_row(store, sub.provider_subscription_id)],
            3,
        )

    assert jobs_of(engine, store.id) == []
    assert deliveries(engine, webhook_id=sub.provider_subscription_id) == []
    assert subscription(engine, sub.id).last_notification_at is None


def test_the_per_store_path_writes_the_same_rows(engine: Engine) -> None:
    store = new_store(engine, Provider.OUTLOOK)
    sub = new_subscription(engine, store, "state")
    items: list[Any] = [change(sub, "state")]
    planned: list[PlannedSync] = []

    verdicts, sends, logged = _commit(Intake(time.monotonic(), b""), items, False, planned, False)
    for plan in planned:
        plan.cancel()  # nothing is published here: leave no pending marker behind

    assert [v.ignored for v in verdicts] == [None]
    assert sends == []
    [job] = jobs_of(engine, store.id)
    assert [(p.job_id, p.task_id) for p in planned] == [(job.id, job.celery_task_id)]
    [row] = deliveries(engine, webhook_id=sub.provider_subscription_id)
    assert (row.id, row.store_id, row.success) == (logged[0], store.id, True)
    assert subscription(engine, sub.id).last_notification_at is not None
