"""Scratch databases and history rows for the partitioning tests (tests/models, tests/safeguards).

Those tests create and drop day partitions, which would change how other tests' backdated rows
are stored; they run in a database of their own instead of the run's shared one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, create_engine, make_url, text

HISTORY = {
    "system_health_metrics": "measured_at",
    "webhook_delivery_log": "created_at",
    "webhook_health_log": "checked_at",
}


@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """The URL of an empty database of its own, dropped on exit."""
    name = f"syncguard_partitions_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def make_tenant(conn: Connection, name: str) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """A business with one store and one subscription: (business_id, store_id, subscription_id)."""
    business_id = conn.execute(
        text("INSERT INTO businesses (name, slug) VALUES (:n, :s) RETURNING id"),
        {"n": name, "s": f"{name.lower()}-{uuid.uuid4().hex[:8]}"},
    ).scalar_one()
    store_id = conn.execute(
        text(
            "INSERT INTO stores (business_id, provider, mailbox_address)"
            " VALUES (:b, 'gmail', :m) RETURNING id"
        ),
        {"b": business_id, "m": f"{uuid.uuid4().hex[:8]}@example.com"},
    ).scalar_one()
    subscription_id = conn.execute(
        text(
            "INSERT INTO webhook_subscriptions (store_id, provider, resource)"
            " VALUES (:s, 'gmail', 'INBOX') RETURNING id"
        ),
        {"s": store_id},
    ).scalar_one()
    return business_id, store_id, subscription_id


def add_history(
    conn: Connection, store_id: uuid.UUID, subscription_id: uuid.UUID, rows: int, step: str
) -> None:
    """``rows`` rows per history table for the store, ``step`` apart going back from now.

    ``business_id`` is left to the trigger; every third delivery failed.
    """
    params = {"store": store_id, "sub": subscription_id, "n": rows - 1, "step": step}
    ago = "now() - g * CAST(:step AS interval)"
    conn.execute(
        text(
            "INSERT INTO system_health_metrics (store_id, metric_type, metric_name,"
            f" metric_value, measured_at) SELECT :store, 'usage', 'm', g, {ago}"
            " FROM generate_series(0, :n) AS g"
        ),
        params,
    )
    conn.execute(
        text(
            "INSERT INTO webhook_delivery_log (store_id, webhook_type, success, created_at)"
            f" SELECT :store, 'gmail_push', g % 3 <> 0, {ago} FROM generate_series(0, :n) AS g"
        ),
        params,
    )
    conn.execute(
        text(
            "INSERT INTO webhook_health_log (store_id, subscription_id, health_score,"
            f" checked_at) SELECT :store, :sub, 0.5, {ago} FROM generate_series(0, :n) AS g"
        ),
        params,
    )


def leaves(conn: Connection, table: str) -> list[str]:
    """Every leaf partition of ``table`` (plain tables that hold rows), by name."""
    return list(
        conn.execute(
            text(
                "SELECT relid::text FROM pg_partition_tree(CAST(:t AS regclass))"
                " WHERE isleaf ORDER BY 1"
            ),
            {"t": table},
        ).scalars()
    )
