"""The seed's five status-check queries run verbatim against our schema and return our rows."""

from __future__ import annotations

import uuid

from sqlalchemy import Engine, text

import models
from syncguard.db import service_session
from tests.factories import make_business, make_store

# Copied from ../shared/seed.md, "Status Check Commands"; only the placeholders are replaced.
SEED_QUERIES = {
    "rate_limits": "SELECT * FROM provider_rate_limits WHERE store_id = 'your-store-id';",
    "circuits": "SELECT * FROM circuit_breaker_state WHERE store_id = 'your-store-id';",
    "deliveries": (
        "SELECT * FROM webhook_delivery_log WHERE store_id = 'your-store-id' "
        "ORDER BY created_at DESC LIMIT 10;"
    ),
    "metrics": """SELECT metric_type, metric_name, AVG(metric_value) as avg_value
FROM system_health_metrics
WHERE business_id = 'your-business-id'
AND measured_at > NOW() - INTERVAL '1 hour'
GROUP BY metric_type, metric_name;""",
    "dead_letters": (
        "SELECT * FROM failed_job_archive WHERE business_id = 'your-business-id' "
        "AND reviewed = false;"
    ),
}


def _run(engine: Engine, name: str, store_id: uuid.UUID, business_id: uuid.UUID) -> list[dict]:
    sql = (
        SEED_QUERIES[name]
        .replace("your-store-id", str(store_id))
        .replace("your-business-id", str(business_id))
    )
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(text(sql))]


def test_seed_status_queries_return_the_rows_written(engine: Engine) -> None:
    with service_session(engine) as session:
        business = make_business(session)
        store = make_store(session, business)
        session.add_all(
            [
                models.ProviderRateLimit(
                    store_id=store.id, provider="gmail", requests_per_minute=60
                ),
                models.CircuitBreakerState(store_id=store.id, circuit_name="gmail", state="open"),
                *(
                    models.WebhookDeliveryLog(
                        store_id=store.id,
                        webhook_type="gmail_push",
                        success=i % 2 == 0,
                        response_code=200 if i % 2 == 0 else 500,
                        duration_ms=i,
                    )
                    for i in range(12)
                ),
                *(
                    models.SystemHealthMetric(
                        store_id=store.id,
                        metric_type="performance",
                        metric_name="task_duration_ms",
                        metric_value=v,
                        unit="ms",
                    )
                    for v in (10.0, 30.0)
                ),
                models.FailedJobArchive(
                    store_id=store.id,
                    job_id=uuid.uuid4().hex,
                    job_type="tasks.sync.sync_store",
                    failure_reason="boom",
                    failure_category="transient_exhausted",
                ),
                models.FailedJobArchive(
                    store_id=store.id,
                    job_id=uuid.uuid4().hex,
                    job_type="tasks.sync.sync_store",
                    failure_reason="seen",
                    failure_category="unknown",
                    reviewed=True,
                ),
            ]
        )
        store_id, business_id = store.id, business.id

    limits = _run(engine, "rate_limits", store_id, business_id)
    assert [r["requests_per_minute"] for r in limits] == [60]
    assert _run(engine, "circuits", store_id, business_id)[0]["state"] == "open"
    deliveries = _run(engine, "deliveries", store_id, business_id)
    assert len(deliveries) == 10 and {r["store_id"] for r in deliveries} == {store_id}
    metrics = _run(engine, "metrics", store_id, business_id)
    assert [(m["metric_name"], float(m["avg_value"])) for m in metrics] == [
        ("task_duration_ms", 20.0)
    ]
    dead = _run(engine, "dead_letters", store_id, business_id)
    assert [r["failure_reason"] for r in dead] == ["boom"]
