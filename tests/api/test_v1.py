"""The JSON API over HTTP: tenant isolation on every endpoint, operator-only actions, replay."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

import models
from api import v1
from api.api_keys import create_key, revoke_key, verify
from safeguards.dead_letter.archive import get_entry
from syncguard.db import service_session
from tests.api.conftest import CREATED_IDS
from tests.factories import make_business

#: The metric every seeded business records.
METRIC = "sync_duration_ms"
#: Every GET endpoint of /api/v1 and the query it needs (checked against the router below).
GET_ENDPOINTS: dict[str, dict[str, str]] = {
    "/api/v1/status": {},
    "/api/v1/circuits": {},
    "/api/v1/rate-limits": {},
    "/api/v1/subscriptions": {},
    "/api/v1/alerts": {},
    "/api/v1/archive": {},
    "/api/v1/jobs": {},
    "/api/v1/metrics/names": {},
    "/api/v1/metrics": {"name": METRIC},
}


@dataclass(frozen=True)
class Tenant:
    """One seeded business: its ids, a row's worth of recognisable values, and its key."""

    business_id: uuid.UUID
    store_id: uuid.UUID
    address: str
    archive_id: uuid.UUID
    alert_message: str
    key: str


def seed_business(name: str, *, circuit: str = "open", metric_base: float = 100.0) -> Tenant:
    """A business with a row in every table the API reads, and a tenant key."""
    now = datetime.now(UTC)
    with service_session() as s:
        business = make_business(s, name)
        address = f"{name.lower()}-{uuid.uuid4().hex[:6]}@shop.example"
        store = models.Store(business_id=business.id, provider="gmail", mailbox_address=address)
        s.add(store)
        s.flush()
        sub = models.WebhookSubscription(
            store_id=store.id,
            provider="gmail",
            resource="users/me",
            status="active",
            expires_at=now + timedelta(days=2),
        )
        s.add(sub)
        s.flush()
        archive = models.FailedJobArchive(
            store_id=store.id,
            job_id=f"job-{uuid.uuid4().hex}",
            job_type="tasks.sync.sync_store",
            failure_reason=f"{name}: Gmail answered 503 five times",
            failure_category="transient_exhausted",
            retry_count=5,
            job_data={"task": "tasks.sync.sync_store", "args": [str(store.id)]},
        )
        alert = models.Alert(
            store_id=store.id,
            rule="circuit_open",
            severity="critical",
            dedup_key=f"circuit_open:{store.id}",
            message=f"{name}: gmail circuit open for {address}",
        )
        s.add_all([archive, alert])
        s.add_all(
            [
                models.SyncJob(
                    store_id=store.id, kind="incremental", trigger="webhook", status="failed"
                ),
                models.SyncedMessage(store_id=store.id, provider_message_id=f"m-{name}"),
                models.ProviderRateLimit(
                    store_id=store.id, provider="gmail", requests_per_minute=250
                ),
                models.CircuitBreakerState(
                    store_id=store.id,
                    circuit_name="gmail",
                    state=circuit,
                    consecutive_failures=5,
                    trip_count=1,
                    opened_at=now,
                    next_attempt_at=now + timedelta(seconds=30),
                ),
                models.WebhookHealthLog(
                    store_id=store.id, subscription_id=sub.id, health_score=0.42
                ),
                models.WebhookDeliveryLog(
                    store_id=store.id, webhook_type="gmail_push", success=True
                ),
                *(
                    models.SystemHealthMetric(
                        store_id=store.id,
                        metric_type="performance",
                        metric_name=METRIC,
                        metric_value=metric_base + 10 * i,
                        measured_at=now - timedelta(minutes=i),
                    )
                    for i in range(5)
                ),
            ]
        )
        s.flush()
        ids = (business.id, store.id, archive.id)
    CREATED_IDS.add(str(ids[1]))  # the replayed sync message is removed after the session
    _key_id, key = create_key(ids[0], f"{name} read-only")
    return Tenant(ids[0], ids[1], address, ids[2], alert.message, key)


@pytest.fixture(scope="module")
def tenants(engine: Engine) -> tuple[Tenant, Tenant]:
    """Businesses A and B, each with data in every table."""
    return seed_business("Alpha"), seed_business("Beta")


@pytest.fixture(scope="module")
def operator_key(engine: Engine) -> str:
    """An operator key."""
    return create_key(None, "Olivia Operator")[1]


def as_key(client: httpx.Client, key: str) -> dict[str, str]:
    """The Authorization header of ``key``."""
    return {"Authorization": f"Bearer {key}"}


def fetch(client: httpx.Client, key: str, path: str, **params: Any) -> httpx.Response:
    """GET ``path`` as ``key``."""
    return client.get(path, params=params, headers=as_key(client, key))


def _get_paths(router: Any, prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for route in router.routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            paths |= _get_paths(inner, prefix if inner is router else prefix + "/api/v1")
        elif "GET" in getattr(route, "methods", ()) and "{" not in route.path:
            paths.add(route.path if route.path.startswith("/api/v1") else "/api/v1" + route.path)
    return paths


def test_the_isolation_test_covers_every_get_endpoint() -> None:
    assert _get_paths(v1.router) == set(GET_ENDPOINTS)


@pytest.mark.parametrize("path", sorted(GET_ENDPOINTS))
def test_a_tenant_sees_its_own_rows_and_never_another_business(
    client: httpx.Client, tenants: tuple[Tenant, Tenant], path: str
) -> None:
    alpha, beta = tenants
    response = fetch(client, alpha.key, path, **GET_ENDPOINTS[path])
    assert response.status_code == 200, response.text
    body = response.text
    for foreign in (beta.business_id, beta.store_id, beta.address, beta.archive_id):
        assert str(foreign) not in body, f"{path} leaked {foreign}"
    assert beta.alert_message not in body
    own = json.dumps(response.json())
    if path == "/api/v1/metrics":
        assert len(response.json()["points"]) == 5
    elif path == "/api/v1/metrics/names":
        assert METRIC in own
    else:
        assert str(alpha.business_id) in own or str(alpha.store_id) in own, f"{path} is empty"


@pytest.mark.parametrize("path", sorted(GET_ENDPOINTS))
def test_the_operator_sees_both_businesses(
    client: httpx.Client, tenants: tuple[Tenant, Tenant], operator_key: str, path: str
) -> None:
    for tenant in tenants:
        params = dict(GET_ENDPOINTS[path], business_id=str(tenant.business_id))
        response = fetch(client, operator_key, path, **params)
        assert response.status_code == 200, response.text
        if path.startswith("/api/v1/metrics"):
            assert METRIC in response.text
        else:
            assert str(tenant.store_id) in response.text, f"{path} hides {tenant.store_id}"
    everything = fetch(client, operator_key, "/api/v1/status").text
    assert all(t.address in everything for t in tenants)


def test_a_tenant_cannot_name_another_business(
    client: httpx.Client, tenants: tuple[Tenant, Tenant]
) -> None:
    alpha, beta = tenants
    response = fetch(client, alpha.key, "/api/v1/status", business_id=str(beta.business_id))
    assert response.status_code == 403
    assert "own business" in response.json()["error"]


def test_another_business_archive_entry_is_not_found(
    client: httpx.Client, tenants: tuple[Tenant, Tenant]
) -> None:
    alpha, beta = tenants
    assert fetch(client, alpha.key, f"/api/v1/archive/{alpha.archive_id}").status_code == 200
    response = fetch(client, alpha.key, f"/api/v1/archive/{beta.archive_id}")
    assert response.status_code == 404
    assert str(beta.archive_id) in response.json()["error"]


@pytest.mark.parametrize("action", ["replay", "discard", "review"])
def test_a_tenant_cannot_act_on_the_archive(
    client: httpx.Client, tenants: tuple[Tenant, Tenant], action: str
) -> None:
    alpha = tenants[0]
    path = f"/api/v1/archive/{alpha.archive_id}/{action}"
    response = client.post(path, json={}, headers=as_key(client, alpha.key))
    assert response.status_code == 403
    assert "read-only" in response.json()["error"]
    entry = get_entry(alpha.archive_id)
    assert entry is not None and not entry.reviewed and entry.replay_task_id is None


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer sgk_not-a-real-key"}, {"Authorization": "Basic abc"}],
    ids=["missing", "unknown", "not-bearer"],
)
def test_without_a_valid_key_every_endpoint_is_401(
    client: httpx.Client, headers: dict[str, str]
) -> None:
    for path, params in GET_ENDPOINTS.items():
        response = client.get(path, params=params, headers=headers)
        assert response.status_code == 401, path
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "key" in response.json()["error"] or "Bearer" in response.json()["error"]


def test_a_revoked_key_is_refused(client: httpx.Client, tenants: tuple[Tenant, Tenant]) -> None:
    key_id, key = create_key(tenants[0].business_id, "temporary")
    assert fetch(client, key, "/api/v1/circuits").status_code == 200
    assert revoke_key(key_id)
    response = fetch(client, key, "/api/v1/circuits")
    assert response.status_code == 401
    assert response.json()["error"] == "invalid or revoked API key"


@pytest.mark.parametrize(
    "key", ["sgk_\x00abc", "sgk_a\ud800", "sgk_" + "A" * 5000, "sgk_\xe9\xff", "sgk_", ""]
)
def test_a_key_of_the_wrong_shape_is_refused_before_sql(engine: Engine, key: str) -> None:
    # NUL used to reach the key_prefix query (a DataError, a 500 for any caller of verify).
    assert verify(key) is None


def test_replay_re_enqueues_once_then_409_unless_forced(
    client: httpx.Client, tenants: tuple[Tenant, Tenant], operator_key: str
) -> None:
    entry_id = tenants[1].archive_id
    path = f"/api/v1/archive/{entry_id}/replay"
    first = client.post(path, headers=as_key(client, operator_key))
    assert first.status_code == 200, first.text
    task_id = first.json()["replay_task_id"]
    entry = get_entry(entry_id)
    assert entry is not None and entry.replay_task_id == task_id
    assert entry.reviewed_by == "Olivia Operator" and entry.resolution == "replayed"

    again = client.post(path, json={"force": False}, headers=as_key(client, operator_key))
    assert again.status_code == 409
    assert "already replayed" in again.json()["error"] and task_id in again.json()["error"]

    forced = client.post(path, json={"force": True}, headers=as_key(client, operator_key))
    assert forced.status_code == 200 and forced.json()["replay_count"] == 2
    assert forced.json()["replay_task_id"] != task_id


def test_the_operator_reviews_and_discards_as_the_key_holder(
    client: httpx.Client, operator_key: str
) -> None:
    tenant = seed_business("Gamma")
    base = f"/api/v1/archive/{tenant.archive_id}"
    reviewed = client.post(
        f"{base}/review",
        json={"note": "provider outage", "resolution": "fixed"},
        headers=as_key(client, operator_key),
    )
    assert reviewed.status_code == 200, reviewed.text
    assert reviewed.json()["reviewed_by"] == "Olivia Operator"
    assert reviewed.json()["review_note"] == "provider outage"
    discarded = client.post(f"{base}/discard", headers=as_key(client, operator_key))
    assert discarded.json()["resolution"] == "discarded"
    refused = client.post(f"{base}/replay", headers=as_key(client, operator_key))
    assert refused.status_code == 409 and "discarded" in refused.json()["error"]


#: An id no row has, fixed: pytest-xdist requires every worker to collect the same test ids.
ABSENT_ID = uuid.UUID("9d4f2c1e-7a3b-4e8d-b6f0-2c5a1e9b7d34")


@pytest.mark.parametrize(
    ("method", "path", "payload", "status", "says"),
    [
        ("GET", "/api/v1/archive", {"category": "bogus"}, 422, "category"),
        ("GET", "/api/v1/archive", {"limit": "0"}, 400, "limit must be between 1"),
        ("GET", "/api/v1/archive", {"since": "yesterday"}, 422, "since"),
        ("GET", "/api/v1/alerts", {"status": "closed"}, 422, "status"),
        ("GET", "/api/v1/metrics", {}, 422, "name"),
        ("GET", "/api/v1/metrics", {"name": METRIC, "bucket": "week"}, 422, "bucket"),
        ("GET", "/api/v1/archive/not-a-uuid", {}, 422, "entry_id"),
        ("GET", f"/api/v1/archive/{ABSENT_ID}", {}, 404, "no dead-letter entry"),
        ("POST", f"/api/v1/archive/{ABSENT_ID}/replay", {}, 404, "no dead-letter entry"),
        ("POST", f"/api/v1/archive/{ABSENT_ID}/review", {"resolution": "x"}, 422, "resolution"),
        ("POST", f"/api/v1/archive/{ABSENT_ID}/replay", {"forse": True}, 422, "forse"),
        # Issue 10 kind 4: text PostgreSQL cannot hold is refused before SQL (it was a 500).
        ("GET", "/api/v1/metrics", {"name": "\x00"}, 422, "name: Value error, control character"),
        ("GET", "/api/v1/archive", {"job_type": "\x00"}, 422, "job_type: Value error, control"),
        ("GET", "/api/v1/archive", {"job_type": "ok\x1b[31m"}, 422, "U+001B at position 2"),
        ("GET", "/api/v1/archive", {"job_type": "x" * 201}, 422, "job_type: String should have"),
        ("GET", "/api/v1/metrics", {"name": METRIC, "until": "0001-01-01T00:00"}, 422, "until"),
        ("GET", "/api/v1/metrics/names", {"since": "0001-01-01T00:00+23:59"}, 422, "since"),
        ("GET", "/api/v1/archive", {"limit": str(2**70)}, 400, "limit must be between 1"),
        (
            "POST",
            f"/api/v1/archive/{ABSENT_ID}/review",
            {"note": "a\x00b"},
            422,
            "note: Value error",
        ),
        (
            "POST",
            f"/api/v1/archive/{ABSENT_ID}/discard",
            {"note": "a\x00"},
            422,
            "note: Value error",
        ),
    ],
)
def test_bad_input_is_refused_with_a_specific_message(
    client: httpx.Client,
    operator_key: str,
    method: str,
    path: str,
    payload: dict[str, Any],
    status: int,
    says: str,
) -> None:
    headers = as_key(client, operator_key)
    if method == "GET":
        response = client.get(path, params=payload, headers=headers)
    else:
        response = client.post(path, json=payload, headers=headers)
    assert response.status_code == status, response.text
    assert says in response.json()["error"]


@pytest.mark.parametrize("body", [b'{"note": "a\\ud800b"}', b'{"note": "\\udfff"}'])
def test_a_lone_surrogate_in_a_note_is_refused_not_a_500(
    client: httpx.Client, operator_key: str, body: bytes
) -> None:
    # JSON's \\uXXXX escape can carry half a surrogate pair, which has no UTF-8 encoding:
    # pydantic's JSON parser refuses it (api.params would too, for a form or query value).
    headers = as_key(client, operator_key) | {"Content-Type": "application/json"}
    response = client.post(f"/api/v1/archive/{ABSENT_ID}/review", content=body, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"].startswith("note: Input should be a valid string")


def test_a_refusal_never_echoes_the_value(client: httpx.Client, operator_key: str) -> None:
    secret = "sgk_pasted-by-mistake\x00"
    response = fetch(client, operator_key, "/api/v1/archive", job_type=secret)
    assert response.status_code == 422
    assert "pasted-by-mistake" not in response.text


def test_a_cookie_alone_cannot_authorise_an_action(
    client: httpx.Client, tenants: tuple[Tenant, Tenant], operator_key: str
) -> None:
    # The dashboard's login form sets the session cookie.
    assert client.post("/dashboard/login", data={"key": operator_key}).status_code == 303
    try:
        path = f"/api/v1/archive/{tenants[0].archive_id}/review"
        assert client.get("/api/v1/circuits").status_code == 200
        response = client.post(path, json={})
        assert response.status_code == 403 and "X-Syncguard-Dashboard" in response.json()["error"]
    finally:
        client.cookies.clear()
