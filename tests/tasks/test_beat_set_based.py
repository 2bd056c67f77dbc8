"""Beat's periodic tasks do set-based work: a real worker, PostgreSQL and Redis, a few hundred
stores made in bulk. Each test checks the work set: what is due is done once, the rest untouched.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery.result import AsyncResult
from sqlalchemy import Engine, text

from models import CircuitState
from safeguards.circuit_breaker.breaker import CircuitBreaker
from safeguards.circuit_breaker.dirty import MARKS
from safeguards.redis_state import get_redis
from tasks import app
from tasks.maintenance import mirror_safeguard_state
from tasks.renewal import check_subscription_health
from tasks.sync.reconcile import reconcile_stores
from tests.worker import running_worker

TIMEOUT_S = 120.0
STORES = 300


@pytest.fixture(scope="module", autouse=True)
def worker() -> Iterator[None]:
    with running_worker(concurrency=2):
        yield


def _stores(engine: Engine, count: int, **columns: str) -> list[uuid.UUID]:
    """``count`` active, connected stores of a new business, made in one INSERT ... SELECT;
    ``columns`` are SQL expressions per column (``i`` is the store's number)."""
    tag = uuid.uuid4().hex[:8]
    extra = "".join(f", {name}" for name in columns)
    values = "".join(f", {expr}" for expr in columns.values())
    with engine.begin() as conn:
        business = conn.execute(
            text("INSERT INTO businesses (name, slug) VALUES (:n, :n) RETURNING id"),
            {"n": f"beat-{tag}"},
        ).scalar_one()
        rows = conn.execute(
            text(
                "INSERT INTO stores (business_id, provider, mailbox_address,"
                f" credentials_encrypted, status{extra})"
                f" SELECT :b, 'gmail', 'b' || i || '-{tag}@beat.test', '\\x00'::bytea,"
                f" 'active'{values} FROM generate_series(1, :count) AS i RETURNING id"
            ),
            {"b": business, "count": count},
        )
        return sorted(row.id for row in rows)


def _wait_chunks(sent: dict[str, Any]) -> None:
    for chunk in sent["chunks"]:
        AsyncResult(chunk, app=app).get(timeout=TIMEOUT_S)


def test_the_mirror_writes_only_circuits_changed_since_the_last_run(engine: Engine) -> None:
    stores = _stores(engine, STORES)
    breaker = CircuitBreaker(get_redis())
    for store in stores:
        breaker.record(store, "gmail_api", True)
    MARKS.flush()  # this process's marks now, as a worker's background send would within 0.5 s
    mirror_safeguard_state.delay().get(timeout=TIMEOUT_S)
    before = _circuit_rows(engine, stores)
    assert len(before) == STORES  # every changed circuit mirrored once

    changed = stores[::10]
    for store in changed:
        breaker.record(store, "gmail_api", False, failure_reason="503")
    MARKS.flush()
    mirror_safeguard_state.delay().get(timeout=TIMEOUT_S)

    after = _circuit_rows(engine, stores)
    rewritten = {s for s in stores if after[s] != before[s]}
    assert rewritten == set(changed)
    assert all(after[s][1] == 1 for s in changed)  # the failure reached the row
    # A state the mirror wrote is the breaker's own (nothing invented on the way).
    assert all(after[s][0] == CircuitState.CLOSED.value for s in stores)


def _circuit_rows(engine: Engine, stores: list[uuid.UUID]) -> dict[uuid.UUID, tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT store_id, state, total_failures, updated_at FROM circuit_breaker_state"
                " WHERE store_id = ANY(:ids) AND circuit_name = 'gmail_api'"
            ),
            {"ids": stores},
        )
        return {r.store_id: (r.state, r.total_failures, r.updated_at) for r in rows}


def test_the_health_check_logs_every_live_subscription_once_per_run(engine: Engine) -> None:
    stores = _stores(engine, STORES)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO webhook_subscriptions (store_id, provider, resource, expires_at,"
                " status) SELECT id, 'gmail', 'me', now() + interval '5 days',"
                " CASE WHEN row_number() OVER (ORDER BY id) % 3 = 0 THEN 'failed'"
                " ELSE 'active' END FROM stores WHERE id = ANY(:ids)"
            ),
            {"ids": stores},
        )
        # A third of the stores had a failed inbound delivery within the window.
        conn.execute(
            text(
                "INSERT INTO webhook_delivery_log (store_id, webhook_type, success,"
                " error_message) SELECT id, 'notification', false, 'boom'"
                " FROM stores WHERE id = ANY(:ids[1:100])"
            ),
            {"ids": stores},
        )

    sent = check_subscription_health.delay().get(timeout=TIMEOUT_S)
    _wait_chunks(sent)

    with engine.connect() as conn:
        logged = conn.execute(
            text(
                "SELECT s.store_id, s.status, count(h.id) AS readings,"
                " max(h.deliveries_failed) AS failed FROM webhook_subscriptions s"
                " LEFT JOIN webhook_health_log h ON h.subscription_id = s.id"
                " WHERE s.store_id = ANY(:ids) GROUP BY s.store_id, s.status"
            ),
            {"ids": stores},
        ).all()
    readings = {r.store_id: r.readings for r in logged}
    live = {r.store_id for r in logged if r.status == "active"}
    assert len(live) == 200
    assert all(readings[s] == 1 for s in live)
    assert all(readings[s] == 0 for s in set(stores) - live)
    failed = {r.store_id: r.failed for r in logged if r.status == "active"}
    assert all(failed[s] == (1 if s in stores[:100] else 0) for s in live)


def test_reconciliation_requests_each_stale_store_once_and_no_fresh_one(engine: Engine) -> None:
    # A third synced an hour ago (stale), the rest a minute ago (fresh).
    stores = _stores(
        engine,
        STORES,
        last_synced_at="now() - CASE WHEN i % 3 = 0 THEN interval '1 hour'"
        " ELSE interval '1 minute' END",
    )
    with engine.connect() as conn:
        stale = set(
            conn.scalars(
                text(
                    "SELECT id FROM stores WHERE id = ANY(:ids)"
                    " AND last_synced_at < now() - interval '30 minutes'"
                ),
                {"ids": stores},
            )
        )
    assert len(stale) == STORES // 3

    sent = reconcile_stores.delay().get(timeout=TIMEOUT_S)
    _wait_chunks(sent)

    with engine.connect() as conn:
        jobs = conn.execute(
            text(
                "SELECT store_id, count(*) AS n, count(celery_task_id) AS named FROM sync_jobs"
                " WHERE store_id = ANY(:ids) AND trigger = 'reconciliation' GROUP BY store_id"
            ),
            {"ids": stores},
        ).all()
    assert {j.store_id for j in jobs} == stale
    # One job each, and each names the one message that may run it (the ledger rule).
    assert all(j.n == 1 and j.named == 1 for j in jobs)
