"""Migration 0008 on a populated database: every row kept in its day's partition, row-level
security and the business_id trigger on every partition, and the way back to 0007."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, create_engine, make_url, text

from safeguards.partitions import ensure_partitions
from syncguard.db import TENANT_SETTING, get_engine
from syncguard.migrate import downgrade, upgrade
from tests.partitioning import HISTORY, add_history, leaves, make_tenant, scratch_database

ROWS_PER_TENANT = 1_500  # every 7 minutes: about a week, so eight or nine day partitions


def _snapshot(conn: Connection) -> dict[str, set[tuple[Any, ...]]]:
    return {
        table: {tuple(r) for r in conn.execute(text(f"SELECT id, business_id, {key} FROM {table}"))}
        for table, key in HISTORY.items()
    }


@pytest.fixture(scope="module")
def migrated(server_url: str) -> Iterator[dict[str, Any]]:
    """A database at 0007 filled with two tenants' history (and one year-old row), then 0008."""
    with scratch_database(server_url) as url:
        upgrade(url, "0007")
        admin = create_engine(url)
        with admin.begin() as conn:
            tenants = [make_tenant(conn, name) for name in ("Alpha", "Beta")]
            for _, store_id, subscription_id in tenants:
                add_history(conn, store_id, subscription_id, ROWS_PER_TENANT, "7 minutes")
            add_history(conn, tenants[0][1], tenants[0][2], 2, "400 days")
            before = _snapshot(conn)
        upgrade(url)
        yield {"url": url, "admin": admin, "tenants": tenants, "before": before}
        admin.dispose()


def test_the_upgrade_keeps_every_row_in_its_days_partition(migrated: dict[str, Any]) -> None:
    with migrated["admin"].connect() as conn:
        assert _snapshot(conn) == migrated["before"]
        today = conn.execute(text("SELECT CAST(now() AT TIME ZONE 'UTC' AS date)")).scalar_one()
        for table, key in HISTORY.items():
            kind = conn.execute(
                text("SELECT relkind FROM pg_class WHERE relname = :t"), {"t": table}
            ).scalar_one()
            assert kind == "p", table
            misplaced = conn.execute(
                text(
                    f"SELECT count(*) FROM {table} WHERE tableoid::regclass::text NOT LIKE"
                    f" '{table}_p' || to_char({key} AT TIME ZONE 'UTC', 'YYYYMMDD') || '%'"
                )
            ).scalar_one()
            assert misplaced == 0, table  # the DEFAULT partition is empty, too
            names = set(leaves(conn, table))
            ahead = {f"{table}_p{today + timedelta(days=d):%Y%m%d}" for d in range(8)}
            if table == "webhook_delivery_log":
                ahead = {f"{name}_{leaf}" for name in ahead for leaf in ("ok", "failed")}
            assert ahead <= names, table
            # Only days with rows, not the year between the old row and the rest.
            assert len(names) < 30 * (2 if table == "webhook_delivery_log" else 1)


@pytest.fixture(scope="module")
def login_url(migrated: dict[str, Any], server_url: str) -> Iterator[str]:
    """The scratch database's URL for a fresh NOSUPERUSER login, member of both roles."""
    login = f"syncguard_login_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {login} LOGIN NOSUPERUSER NOBYPASSRLS"))
        conn.execute(text(f"GRANT syncguard_service, syncguard_tenant TO {login}"))
    yield make_url(migrated["url"]).set(username=login, password=None).render_as_string(False)
    with admin.connect() as conn:
        conn.execute(text(f"DROP ROLE {login}"))
    admin.dispose()


def _as_tenant(conn: Connection, business_id: uuid.UUID) -> None:
    conn.execute(text("SET LOCAL ROLE syncguard_tenant"))
    conn.execute(
        text("SELECT set_config(:n, :v, true)"), {"n": TENANT_SETTING, "v": str(business_id)}
    )


def test_a_tenant_sees_only_its_rows_in_every_partition(
    migrated: dict[str, Any], login_url: str
) -> None:
    engine = create_engine(login_url)
    alpha = migrated["tenants"][0][0]
    shared = 0  # partitions that hold both tenants' rows: the test is not vacuous
    with migrated["admin"].connect() as admin:
        owned = {
            (leaf, business): n
            for table in HISTORY
            for leaf in leaves(admin, table)
            for business, n in admin.execute(
                text(f"SELECT business_id, count(*) FROM {leaf} GROUP BY 1")
            )
        }
    for table in HISTORY:
        with migrated["admin"].connect() as admin:
            names = leaves(admin, table)
        for leaf in names:
            with engine.begin() as conn:
                _as_tenant(conn, alpha)
                seen = conn.execute(
                    text(f"SELECT business_id, count(*) FROM {leaf} GROUP BY 1")
                ).all()
            assert [tuple(r) for r in seen] == (
                [(alpha, owned[(leaf, alpha)])] if (leaf, alpha) in owned else []
            ), leaf
            shared += len({b for (name, b) in owned if name == leaf}) > 1
        with engine.begin() as conn:
            _as_tenant(conn, alpha)
            through_parent = conn.execute(text(f"SELECT DISTINCT business_id FROM {table}")).all()
        assert [tuple(r) for r in through_parent] == [(alpha,)], table
    assert shared >= 3 * 8
    engine.dispose()


def test_partitions_made_later_are_protected_and_fill_business_id(
    migrated: dict[str, Any],
) -> None:
    service = get_engine(migrated["url"])  # the application's own role makes them
    with service.begin() as conn:
        today = conn.execute(text("SELECT CAST(now() AT TIME ZONE 'UTC' AS date)")).scalar_one()
        later: date = today + timedelta(days=40)
        created = ensure_partitions(conn, later, days_ahead=0)
    assert {t: len(names) for t, names in created.items()} == dict.fromkeys(HISTORY, 1)
    business_id, store_id, subscription_id = migrated["tenants"][1]
    at = f"{later:%Y-%m-%d} 12:00:00+00"
    with service.begin() as conn:
        for table, key in HISTORY.items():
            columns, values = _minimal_row(table)
            row = conn.execute(
                text(
                    f"INSERT INTO {table} (store_id, {key}, {columns})"
                    f" VALUES (:s, :at, {values}) RETURNING business_id, tableoid::regclass::text"
                ),
                {"s": store_id, "at": at, "sub": subscription_id},
            ).one()
            suffix = "_ok" if table == "webhook_delivery_log" else ""
            assert tuple(row) == (business_id, f"{table}_p{later:%Y%m%d}{suffix}"), table
    with migrated["admin"].connect() as conn:
        for table in HISTORY:
            unprotected = conn.execute(
                text(
                    "SELECT c.relname FROM pg_partition_tree(CAST(:t AS regclass)) AS p"
                    " JOIN pg_class c ON c.oid = p.relid"
                    " WHERE NOT (c.relrowsecurity AND c.relforcerowsecurity)"
                    " OR (SELECT count(*) FROM pg_policies WHERE tablename = c.relname) <> 2"
                    " OR (p.isleaf AND NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = c.oid"
                    "     AND tgname = 'fill_business_id'))"
                ),
                {"t": table},
            ).all()
            assert unprotected == [], table


def _minimal_row(table: str) -> tuple[str, str]:
    return {
        "system_health_metrics": ("metric_type, metric_name, metric_value", "'usage', 'm', 1"),
        "webhook_delivery_log": ("webhook_type, success", "'gmail_push', true"),
        "webhook_health_log": ("subscription_id, health_score", ":sub, 1"),
    }[table]


def test_the_downgrade_to_0007_keeps_every_row_and_the_upgrade_runs_again(
    migrated: dict[str, Any],
) -> None:
    admin: Engine = migrated["admin"]
    with admin.connect() as conn:
        before = _snapshot(conn)
    downgrade(migrated["url"], "0007")
    with admin.connect() as conn:
        assert _snapshot(conn) == before
        kinds = conn.execute(
            text("SELECT DISTINCT relkind FROM pg_class WHERE relname = ANY(:t)"),
            {"t": list(HISTORY)},
        ).scalars()
        assert list(kinds) == ["r"]
    upgrade(migrated["url"])
    with admin.connect() as conn:
        assert _snapshot(conn) == before


def test_the_seed_metrics_query_runs_verbatim_and_scans_only_the_last_hours_partitions(
    migrated: dict[str, Any],
) -> None:
    from tests.models.test_seed_status_sql import SEED_QUERIES

    alpha = migrated["tenants"][0][0]
    sql = SEED_QUERIES["metrics"].replace("your-business-id", str(alpha))
    with migrated["admin"].connect() as conn:
        rows = conn.execute(text(sql)).all()
        plan = conn.execute(text("EXPLAIN (ANALYZE, FORMAT JSON) " + sql)).scalar_one()
        days = len(leaves(conn, "system_health_metrics"))
        today = conn.execute(text("SELECT CAST(now() AT TIME ZONE 'UTC' AS date)")).scalar_one()
    scanned = {name for name in _relations(plan) if name != "system_health_metrics_default"}
    # The last hour lies in today's partition (and yesterday's, just after midnight); the days
    # ahead are empty. Every older day is pruned when the executor starts (NOW() is stable).
    first = f"system_health_metrics_p{today - timedelta(days=1):%Y%m%d}"
    assert rows and scanned and min(scanned) >= first, scanned
    assert days - len(scanned) >= 8 and _subplans_removed(plan) >= days - len(scanned) - 1


def _relations(plan: Any) -> Iterator[str]:
    if isinstance(plan, dict):
        if "Relation Name" in plan:
            yield plan["Relation Name"]
        for value in plan.values():
            yield from _relations(value)
    elif isinstance(plan, list):
        for item in plan:
            yield from _relations(item)


def _subplans_removed(plan: Any) -> int:
    if isinstance(plan, dict):
        own = int(plan.get("Subplans Removed", 0))
        return own + sum(_subplans_removed(v) for v in plan.values())
    if isinstance(plan, list):
        return sum(_subplans_removed(item) for item in plan)
    return 0
