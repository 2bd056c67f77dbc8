"""The seed's status queries over 10M-row history, partitioned (0008) vs the flat tables (0007).

``python -m bench.history_plans [--rows N] [--stores S] [--keep]``. Makes two scratch databases
on DATABASE_URL's server, one migrated to head (daily partitions) and one to 0007 (the same
tables unpartitioned, the peer), fills each with the same rows in bulk (generate_series,
1M-row chunks): half of ``--rows`` in ``system_health_metrics`` spread over the 90 days of its
retention and half in ``webhook_delivery_log`` over 30, for ``--stores`` stores of stores/10
businesses. Then VACUUM ANALYZE, and the seed's two history queries, verbatim but for the ids,
``--repeat`` times each with EXPLAIN (ANALYZE, BUFFERS): prints the median execution time, the
ratio to the peer, the partitions scanned and the plan of the last run. Last, retention of one
day of metrics: DETACH + DROP of its partition vs DELETE of the same rows from the flat table.
Figures vary with the machine's load: compare the two layouts of one run, not runs.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import Connection, Engine, create_engine, make_url, text

from syncguard.db import database_url
from syncguard.migrate import upgrade

# From ../shared/seed.md, "Status Check Commands"; only the placeholders are replaced.
SEED_QUERIES = {
    "deliveries": (
        "SELECT * FROM webhook_delivery_log WHERE store_id = 'your-store-id' "
        "ORDER BY created_at DESC LIMIT 10;"
    ),
    "metrics": """SELECT metric_type, metric_name, AVG(metric_value) as avg_value
FROM system_health_metrics
WHERE business_id = 'your-business-id'
AND measured_at > NOW() - INTERVAL '1 hour'
GROUP BY metric_type, metric_name;""",
}
CHUNK = 1_000_000
FILL = {
    "system_health_metrics": (
        "INSERT INTO system_health_metrics (business_id, store_id, metric_type, metric_name,"
        " metric_value, measured_at) SELECT s.business_id, s.id,"
        " (ARRAY['performance', 'errors', 'usage', 'queue'])[1 + g % 4], 'metric_' || g % 10,"
        " g % 1000, CAST(:anchor AS timestamptz) - interval '90 days'"
        " + (g::float8 / :n) * interval '90 days'"
        " FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS g"
        " JOIN bench_stores s ON s.i = g % :stores"
    ),
    "webhook_delivery_log": (
        "INSERT INTO webhook_delivery_log (business_id, store_id, webhook_type, success,"
        " response_code, duration_ms, created_at) SELECT s.business_id, s.id, 'gmail_push',"
        " g % 10 <> 0, CASE WHEN g % 10 <> 0 THEN 200 ELSE 500 END, g % 300,"
        " CAST(:anchor AS timestamptz) - interval '30 days' + (g::float8 / :n) * interval '30 days'"
        " FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS g"
        " JOIN bench_stores s ON s.i = g % :stores"
    ),
}


@contextmanager
def scratch(server: str, keep: bool) -> Iterator[str]:
    """A new database on ``server``'s cluster; dropped afterwards unless ``keep``."""
    name = f"syncguard_bench_history_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        if keep:
            print(f"kept database {name}")
        else:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def fill(engine: Engine, rows: int, stores: int, partitioned: bool, anchor: datetime) -> float:
    """Businesses, stores and the history rows; seconds taken by the history rows.

    Ids are md5 of an ordinal, not random: both layouts hold the very same rows, so one seed
    query (ids picked in one database) finds the same rows in the other.
    """
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO businesses (id, name, slug)"
                " SELECT CAST(md5('b' || b) AS uuid), 'b' || b, 'b-' || b"
                " FROM generate_series(0, :n - 1) AS b"
            ),
            {"n": max(stores // 10, 1)},
        )
        conn.execute(
            text(
                "INSERT INTO stores (id, business_id, provider, mailbox_address)"
                " SELECT CAST(md5('s' || s) AS uuid), CAST(md5('b' || s % :b) AS uuid),"
                " 'gmail', 's' || s || '@example.com' FROM generate_series(0, :n - 1) AS s"
            ),
            {"n": stores, "b": max(stores // 10, 1)},
        )
        conn.execute(
            text(
                "CREATE TABLE bench_stores AS SELECT (row_number() OVER (ORDER BY id)) - 1 AS i,"
                " id, business_id FROM stores"
            )
        )
        conn.execute(text("ALTER TABLE bench_stores ADD PRIMARY KEY (i)"))
        if partitioned:  # every day of each table's retention has its partition, as in production
            for table, days in (("system_health_metrics", 91), ("webhook_delivery_log", 31)):
                conn.execute(
                    text(
                        "SELECT syncguard_create_history_partition(CAST(:t AS regclass),"
                        " CAST(:anchor AT TIME ZONE 'UTC' AS date) - d)"
                        " FROM generate_series(0, :days) AS d"
                    ),
                    {"t": table, "anchor": anchor, "days": days},
                )
    started = time.perf_counter()
    for table, sql in FILL.items():
        for lo in range(0, rows, CHUNK):
            with engine.begin() as conn:
                # The same for both layouts: no per-row trigger or foreign-key check (the rows
                # are made consistent by construction), as a bulk load would.
                conn.execute(text("SET LOCAL session_replication_role = replica"))
                params = {
                    "lo": lo, "hi": min(lo + CHUNK, rows) - 1, "n": rows, "stores": stores,
                    "anchor": anchor,
                }  # fmt: skip
                conn.execute(text(sql), params)
            print(f"  {table} ({partitioned=}): {min(lo + CHUNK, rows):,} rows", flush=True)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    return time.perf_counter() - started


def explain(conn: Connection, sql: str, repeat: int) -> tuple[float, float, list[str]]:
    """Median planning and execution times (ms) of ``repeat`` runs, the plan of the last one.

    One run first, not counted: a session's first plan over many partitions loads their
    catalog entries (see the first run's planning time in the report).
    """
    plan = list(conn.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql)).scalars())
    print(f"  first run in the session: {plan[-2].strip()}, {plan[-1].strip()}")
    planning, execution = [], []
    for _ in range(repeat):
        plan = list(conn.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql)).scalars())
        planning.append(float(re.findall(r"Planning Time: ([\d.]+) ms", "\n".join(plan))[0]))
        execution.append(float(re.findall(r"Execution Time: ([\d.]+) ms", plan[-1])[0]))
    return statistics.median(planning), statistics.median(execution), plan


def seed_queries(engine: Engine) -> dict[str, str]:
    """The seed's queries for the store (and its business) of the newest metric: rows to find."""
    with engine.connect() as conn:
        business_id, store_id = conn.execute(
            text(
                "SELECT business_id, store_id FROM system_health_metrics"
                " ORDER BY measured_at DESC LIMIT 1"
            )
        ).one()
    return {
        name: sql.replace("your-store-id", str(store_id)).replace(
            "your-business-id", str(business_id)
        )
        for name, sql in SEED_QUERIES.items()
    }


def drop_vs_delete(partitioned: Engine, flat: Engine) -> tuple[float, float, int]:
    """Seconds to remove the oldest full day of metrics: drop its partition, DELETE its rows."""
    with partitioned.begin() as conn:
        day = conn.execute(
            text(
                "SELECT min(relname) FROM pg_class"
                " WHERE relname ~ '^system_health_metrics_p\\d{8}$'"
                " AND relname > 'system_health_metrics_p'"
                " || to_char(CAST(now() AT TIME ZONE 'UTC' AS date) - 90, 'YYYYMMDD')"
            )
        ).scalar_one()
        started = time.perf_counter()
        held = conn.execute(
            text("SELECT syncguard_drop_history_partition(CAST(:p AS regclass))"), {"p": day}
        ).scalar_one()
    dropped = time.perf_counter() - started
    lower = f"{day[-8:-4]}-{day[-4:-2]}-{day[-2:]} 00:00:00+00"
    with flat.begin() as conn:
        started = time.perf_counter()
        deleted = conn.execute(
            text(
                "DELETE FROM system_health_metrics WHERE measured_at >= CAST(:lo AS timestamptz)"
                " AND measured_at < CAST(:lo AS timestamptz) + interval '1 day'"
            ),
            {"lo": lower},
        ).rowcount
    removed = time.perf_counter() - started
    assert deleted == held, (deleted, held)
    return dropped, removed, int(held)


def main() -> None:
    """Fill both layouts, compare the plans, print the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--rows", type=int, default=10_000_000, help="history rows per layout, half per table"
    )
    parser.add_argument("--stores", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the scratch databases")
    args = parser.parse_args()
    server = database_url()
    with scratch(server, args.keep) as head_url, scratch(server, args.keep) as flat_url:
        upgrade(head_url)
        upgrade(flat_url, "0007")
        engines = {"partitioned": create_engine(head_url), "flat": create_engine(flat_url)}
        with engines["flat"].connect() as conn:  # both layouts get the very same timestamps
            anchor = conn.execute(text("SELECT now()")).scalar_one()
        print(f"filling both layouts at once ({args.rows:,} rows each, {args.stores:,} stores)")
        with ThreadPoolExecutor(2) as pool:  # the machine is shared: overlap the two fills' I/O
            filling = {
                layout: pool.submit(
                    fill, engine, args.rows // 2, args.stores, layout == "partitioned", anchor
                )
                for layout, engine in engines.items()
            }
            for layout, future in filling.items():
                print(f"  {layout}: {args.rows / future.result():,.0f} rows/s")
        queries = seed_queries(engines["flat"])
        for name, sql in queries.items():
            results = {}
            for layout, engine in engines.items():
                print(f"\n== {name}, {layout}")
                with engine.connect() as conn:
                    results[layout] = explain(conn, sql, args.repeat)
                print("\n".join(results[layout][2]))
            (p_plan, p_exec, _), (f_plan, f_exec, _) = results["partitioned"], results["flat"]
            print(
                f"\n== {name} (median of {args.repeat}): partitioned plan {p_plan:.2f} + execute"
                f" {p_exec:.2f} ms, flat plan {f_plan:.2f} + execute {f_exec:.2f} ms,"
                f" ratio {(p_plan + p_exec) / (f_plan + f_exec):.2f}"
            )
        dropped, deleted, held = drop_vs_delete(engines["partitioned"], engines["flat"])
        print(
            f"\n== retention of one day ({held:,} metrics rows): DETACH + DROP {dropped * 1000:.1f}"
            f" ms, DELETE {deleted * 1000:.1f} ms, ratio {deleted / dropped:.0f}x"
        )
        for engine in engines.values():
            engine.dispose()


if __name__ == "__main__":
    main()
