"""Row-level security against the real server, through a non-superuser login role."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Connection, Engine, create_engine, make_url, text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session

import models
from syncguard.db import TENANT_SETTING
from tests.factories import make_business, make_store

SERVICE_ROLE = "syncguard_service"
TENANT_ROLE = "syncguard_tenant"


@pytest.fixture(scope="module")
def login_engine(database_url: str, server_url: str) -> Iterator[Engine]:
    """An engine that logs in as a fresh NOSUPERUSER role, member of both syncguard roles."""
    login = f"syncguard_login_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {login} LOGIN NOSUPERUSER NOBYPASSRLS"))
        conn.execute(text(f"GRANT {SERVICE_ROLE}, {TENANT_ROLE} TO {login}"))
    engine = create_engine(make_url(database_url).set(username=login, password=None))
    yield engine
    engine.dispose()
    with admin.connect() as conn:
        conn.execute(text(f"DROP ROLE {login}"))
    admin.dispose()


def _as_tenant(conn: Connection, business_id: uuid.UUID) -> None:
    conn.execute(text(f"SET LOCAL ROLE {TENANT_ROLE}"))
    conn.execute(
        text("SELECT set_config(:n, :v, true)"), {"n": TENANT_SETTING, "v": str(business_id)}
    )


@pytest.fixture(scope="module")
def two_tenants(engine: Engine) -> tuple[uuid.UUID, uuid.UUID]:
    """Businesses A and B, each with a row in every tenant table."""
    from syncguard.db import service_session

    with service_session(engine) as session:
        ids = tuple(_populate(session, name) for name in ("Alpha", "Beta"))
    return ids[0], ids[1]


def _populate(session: Session, name: str) -> uuid.UUID:
    business = make_business(session, name)
    store = make_store(session, business)
    endpoint = models.WebhookEndpoint(
        business_id=business.id, url="https://x", secret_encrypted=b"x"
    )
    subscription = models.WebhookSubscription(store_id=store.id, provider="gmail", resource="me")
    key = models.ApiKey(
        business_id=business.id,
        name="viewer",
        key_prefix="sgk_x",
        key_hash=uuid.uuid4().hex * 2,
        role="tenant",
    )
    session.add_all([endpoint, subscription, key])
    session.flush()
    session.add(
        models.OutboundMessage(
            id=f"msg_{uuid.uuid4().hex}", endpoint_id=endpoint.id, event_type="sync.completed"
        )
    )
    session.add_all(
        [
            models.SyncJob(store_id=store.id, kind="full", trigger="manual"),
            models.SyncedMessage(store_id=store.id, provider_message_id="m1"),
            models.ProviderRateLimit(store_id=store.id, provider="gmail"),
            models.CircuitBreakerState(store_id=store.id, circuit_name="gmail"),
            models.FailedJobArchive(
                store_id=store.id,
                job_id=uuid.uuid4().hex,
                job_type="t",
                failure_reason="r",
                failure_category="unknown",
            ),
            models.WebhookDeliveryLog(store_id=store.id, webhook_type="gmail_push", success=True),
            models.WebhookHealthLog(
                store_id=store.id, subscription_id=subscription.id, health_score=1
            ),
            models.SystemHealthMetric(
                store_id=store.id, metric_type="usage", metric_name="m", metric_value=1
            ),
            models.DashboardSession(
                business_id=business.id,
                api_key_id=key.id,
                token_hash=uuid.uuid4().hex * 2,
                expires_at=datetime.now(UTC) + timedelta(hours=1),
            ),
            models.Alert(
                store_id=store.id,
                rule="r",
                severity="info",
                dedup_key=uuid.uuid4().hex,
                message="m",
            ),
        ]
    )
    return business.id


@pytest.mark.parametrize("table", ["businesses", *models.TENANT_TABLES])
def test_tenant_sees_only_its_own_rows(
    login_engine: Engine, two_tenants: tuple[uuid.UUID, uuid.UUID], table: str
) -> None:
    alpha, beta = two_tenants
    key = "id" if table == "businesses" else "business_id"
    with login_engine.begin() as conn:
        _as_tenant(conn, alpha)
        seen = set(conn.execute(text(f"SELECT DISTINCT {key} FROM {table}")).scalars())
    assert seen == {alpha}, f"{table} leaked {seen - {alpha}}"
    assert beta not in seen


def test_tenant_without_setting_sees_nothing(login_engine: Engine, two_tenants: object) -> None:
    with login_engine.begin() as conn:
        conn.execute(text(f"SET LOCAL ROLE {TENANT_ROLE}"))
        assert conn.execute(text("SELECT count(*) FROM stores")).scalar_one() == 0


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO businesses (name, slug) VALUES ('x', 'x-tenant')",
        "UPDATE stores SET display_name = 'hacked'",
        "DELETE FROM synced_messages",
        "UPDATE failed_job_archive SET reviewed = true",
    ],
)
def test_tenant_role_cannot_write(
    login_engine: Engine, two_tenants: tuple[uuid.UUID, uuid.UUID], statement: str
) -> None:
    with login_engine.begin() as conn:
        _as_tenant(conn, two_tenants[0])
        with pytest.raises(ProgrammingError, match="permission denied"):
            conn.execute(text(statement))


def test_service_role_reads_and_writes_everything(
    login_engine: Engine, two_tenants: tuple[uuid.UUID, uuid.UUID]
) -> None:
    with login_engine.begin() as conn:
        conn.execute(text(f"SET LOCAL ROLE {SERVICE_ROLE}"))
        seen = set(conn.execute(text("SELECT business_id FROM stores")).scalars())
        assert set(two_tenants) <= seen
        updated = conn.execute(
            text("UPDATE stores SET display_name = 'renamed' WHERE business_id = :b"),
            {"b": two_tenants[1]},
        )
        assert updated.rowcount == 1
        deleted = conn.execute(
            text("DELETE FROM synced_messages WHERE business_id = :b"), {"b": two_tenants[1]}
        )
        assert deleted.rowcount == 1
        conn.rollback()


def test_syncguard_roles_cannot_log_in_or_bypass_rls(engine: Engine) -> None:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT rolname, rolcanlogin, rolbypassrls, rolsuper FROM pg_roles "
                "WHERE rolname = ANY(:names)"
            ),
            {"names": [SERVICE_ROLE, TENANT_ROLE]},
        ).all()
    assert {r.rolname for r in rows} == {SERVICE_ROLE, TENANT_ROLE}
    assert not any(r.rolcanlogin or r.rolbypassrls or r.rolsuper for r in rows)
