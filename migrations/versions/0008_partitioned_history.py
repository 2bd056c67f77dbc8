"""Time-partitioned history: system_health_metrics, webhook_delivery_log and webhook_health_log
become tables partitioned by RANGE on their timestamp, one partition per UTC day plus a DEFAULT
one, with the functions Beat uses to create partitions ahead and retention uses to drop them.

webhook_delivery_log's days are themselves partitioned by LIST (success): successful deliveries
are kept 7 days and failed ones 30 (two settings), so the successful half of a day goes by one
TRUNCATE and the day by one DROP, never by deleting rows. A partitioned table's primary key must
hold its partition keys, so the keys are (id, measured_at), (id, created_at, success) and
(id, checked_at); nothing refers to these tables, and no upsert names their keys.

The upgrade copies the existing rows (under the old table's lock: writers wait until the
revision commits). Partitions are created for every UTC day that has rows, and for today and the
next AHEAD_DAYS days; Beat keeps creating them ahead (tasks/partitions.py).

The service role does not own the tables, and creating, detaching or truncating a partition
needs ownership: as ``syncguard_analyze`` (0004) does for ANALYZE, SECURITY DEFINER functions do
exactly these three things, for these three tables only. They must run as an owner that bypasses
row-level security (the migrating superuser), since every partition forces it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from alembic import op

from migrations.rls import SERVICE_ROLE, fill_business_id_trigger, protect

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Days after today that get their partition at upgrade time (Beat keeps going from there).
AHEAD_DAYS = 7


class History(NamedTuple):
    """One history table: its timestamp, sub-partition key, foreign keys and indexes.

    A NamedTuple, not a dataclass: Alembic loads revisions outside ``sys.modules``.
    """

    table: str
    key: str
    sub_key: str | None
    foreign_keys: tuple[tuple[str, str, str], ...]  # (column, referred table, ON DELETE)
    indexes: tuple[tuple[str, str, str], ...]  # (name, columns, method)

    @property
    def primary_key(self) -> str:
        return ", ".join(c for c in ("id", self.key, self.sub_key) if c)


TABLES = (
    History(
        "system_health_metrics",
        "measured_at",
        None,
        (("business_id", "businesses", "CASCADE"), ("store_id", "stores", "CASCADE")),
        (
            (
                "ix_system_health_metrics_business_id_measured_at",
                "business_id, measured_at, metric_type, metric_name",
                "btree",
            ),
            ("ix_system_health_metrics_measured_at_brin", "measured_at", "brin"),
            (
                "ix_system_health_metrics_metric_name_measured_at",
                "metric_type, metric_name, measured_at",
                "btree",
            ),
            ("ix_system_health_metrics_store_id_measured_at", "store_id, measured_at", "btree"),
        ),
    ),
    History(
        "webhook_delivery_log",
        "created_at",
        "success",
        (
            ("business_id", "businesses", "CASCADE"),
            ("endpoint_id", "webhook_endpoints", "SET NULL"),
            ("store_id", "stores", "CASCADE"),
        ),
        (
            ("ix_webhook_delivery_log_business_id", "business_id", "btree"),
            ("ix_webhook_delivery_log_store_id_created_at", "store_id, created_at", "btree"),
            ("ix_webhook_delivery_log_success_created_at", "success, created_at", "btree"),
            ("ix_webhook_delivery_log_direction_created_at", "direction, created_at", "btree"),
        ),
    ),
    History(
        "webhook_health_log",
        "checked_at",
        None,
        (
            ("business_id", "businesses", "CASCADE"),
            ("store_id", "stores", "CASCADE"),
            ("subscription_id", "webhook_subscriptions", "CASCADE"),
        ),
        (
            ("ix_webhook_health_log_business_id", "business_id", "btree"),
            ("ix_webhook_health_log_checked_at", "checked_at", "btree"),
            (
                "ix_webhook_health_log_subscription_id_checked_at",
                "subscription_id, checked_at",
                "btree",
            ),
        ),
    ),
)

# By name, not by a regclass constant: plpgsql caches a plan with the OID it resolved first.
_KEYS = "\n".join(f"        WHEN '{h.table}' THEN '{h.key}'" for h in TABLES)
_SUB_KEYS = "\n".join(f"        WHEN '{h.table}' THEN '{h.sub_key}'" for h in TABLES if h.sub_key)
_PROTECT_BODY = "\n".join(
    "    EXECUTE format('{}', part);".format(s.replace("'", "''")) for s in protect("%s")
)

FUNCTIONS = f"""
CREATE FUNCTION syncguard_history_key(parent regclass) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, public AS $$
    SELECT CASE relname
{_KEYS}
    END FROM pg_class WHERE oid = parent AND relkind = 'p'
$$;

CREATE FUNCTION syncguard_history_sub_key(parent regclass) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, public AS $$
    SELECT CASE relname
{_SUB_KEYS}
    END FROM pg_class WHERE oid = parent AND relkind = 'p'
$$;

CREATE FUNCTION syncguard_protect_partition(part regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
{_PROTECT_BODY}
END
$$;

-- Creates parent's partition for one UTC day (and its leaves), named <parent>_pYYYYMMDD, if it
-- does not exist; true when it created it. Rows of that day already in the DEFAULT partition
-- are moved into it (ATTACH would fail otherwise). ATTACH, unlike CREATE ... PARTITION OF, takes
-- only SHARE UPDATE EXCLUSIVE on the parent: writers carry on meanwhile.
CREATE FUNCTION syncguard_create_history_partition(parent regclass, day date) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    key text := syncguard_history_key(parent);
    sub_key text := syncguard_history_sub_key(parent);
    base text := (SELECT relname FROM pg_class WHERE oid = parent);
    name text := base || '_p' || to_char(day, 'YYYYMMDD');
    space text := (SELECT relnamespace::regnamespace::text FROM pg_class WHERE oid = parent);
    part text := format('%I.%I', space, name);
    spill text := format('%I.%I', space, base || '_default');
    lower timestamptz := day::timestamp AT TIME ZONE 'UTC';
    upper timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
    waiting boolean;
BEGIN
    IF key IS NULL THEN
        RAISE EXCEPTION 'syncguard_create_history_partition: % is not a history table', parent
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- Two Beat runs at once: the second waits here, then finds the partition made.
    PERFORM pg_advisory_xact_lock(hashtext('syncguard_history_partitions'));
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %s (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS)%s',
        part, parent, CASE WHEN sub_key IS NULL THEN ''
                           ELSE format(' PARTITION BY LIST (%I)', sub_key) END);
    IF sub_key IS NOT NULL THEN
        EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES IN (true)',
            space, name || '_ok', part);
        EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES IN (false)',
            space, name || '_failed', part);
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE %I >= %L AND %I < %L)',
        spill, key, lower, key, upper) INTO waiting;
    IF waiting THEN
        EXECUTE format('WITH gone AS (DELETE FROM %s WHERE %I >= %L AND %I < %L RETURNING *) '
                       'INSERT INTO %s SELECT * FROM gone', spill, key, lower, key, upper, part);
    END IF;
    EXECUTE format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%L) TO (%L)',
        parent, part, lower, upper);
    PERFORM syncguard_protect_partition(part::regclass);
    IF sub_key IS NOT NULL THEN
        PERFORM syncguard_protect_partition(format('%I.%I', space, name || '_ok')::regclass);
        PERFORM syncguard_protect_partition(format('%I.%I', space, name || '_failed')::regclass);
    END IF;
    RETURN true;
END
$$;

-- Detaches and drops one day partition of a history table (never the DEFAULT one); returns the
-- rows it held, counted before the detach so the parent's lock is held only for the detach.
CREATE FUNCTION syncguard_drop_history_partition(part regclass) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    parent regclass;
    held bigint;
BEGIN
    SELECT i.inhparent INTO parent FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhrelid = part AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT';
    IF parent IS NULL OR syncguard_history_key(parent) IS NULL THEN
        RAISE EXCEPTION 'syncguard_drop_history_partition: % is not a day of a history table', part
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    EXECUTE format('SELECT count(*) FROM %s', part) INTO held;
    EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', parent, part);
    EXECUTE format('DROP TABLE %s', part);
    RETURN held;
END
$$;

-- Empties one leaf of a sub-partitioned day (a day's successful or failed deliveries); returns
-- the rows it held. TRUNCATE locks the leaf only, and an empty leaf is left alone.
CREATE FUNCTION syncguard_truncate_history_partition(part regclass) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    day regclass;
    parent regclass;
    held bigint;
BEGIN
    SELECT i.inhparent INTO day FROM pg_inherits i WHERE i.inhrelid = part;
    SELECT i.inhparent INTO parent FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhrelid = day AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT';
    IF parent IS NULL OR syncguard_history_sub_key(parent) IS NULL THEN
        RAISE EXCEPTION 'syncguard_truncate_history_partition: % is not a leaf of a history day',
            part USING ERRCODE = 'insufficient_privilege';
    END IF;
    EXECUTE format('SELECT count(*) FROM %s', part) INTO held;
    IF held > 0 THEN
        EXECUTE format('TRUNCATE %s', part);
    END IF;
    RETURN held;
END
$$;
"""
# 0007's list of tables syncguard_analyze accepts; the cleanup now also analyzes the DEFAULT
# partitions it deletes rows from (ANALYZE of a parent would sample every partition).
ANALYZED_BEFORE = (
    "webhook_delivery_log",
    "failed_job_archive",
    "system_health_metrics",
    "webhook_health_log",
    "alerts",
    "outbound_messages",
)


def _analyze_function(tables: tuple[str, ...]) -> str:
    # By name: a regclass constant is cached in a session's plan with the OID it first
    # resolved, and 0008 replaces the three tables under the same names.
    allowed = ", ".join(f"'{t}'" for t in tables)
    return f"""
CREATE OR REPLACE FUNCTION syncguard_analyze(target regclass) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    IF (SELECT relname FROM pg_class WHERE oid = target) NOT IN ({allowed}) THEN
        RAISE EXCEPTION 'syncguard_analyze: % is not a table the cleanup maintains', target
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    EXECUTE format('ANALYZE %s', target);
END
$$;
"""


def _analyze_function_0007() -> str:
    allowed = ", ".join(f"'{t}'::regclass" for t in ANALYZED_BEFORE)
    return _analyze_function(()).replace(
        "(SELECT relname FROM pg_class WHERE oid = target) NOT IN ()", f"target NOT IN ({allowed})"
    )


_PRIVILEGED = (
    "syncguard_create_history_partition(regclass, date)",
    "syncguard_drop_history_partition(regclass)",
    "syncguard_truncate_history_partition(regclass)",
)


def upgrade() -> None:
    op.execute(FUNCTIONS)
    op.execute("REVOKE ALL ON FUNCTION syncguard_protect_partition(regclass) FROM PUBLIC")
    for signature in _PRIVILEGED:
        op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO {SERVICE_ROLE}")
    for history in TABLES:
        _partition(history)
    defaults = tuple(f"{h.table}_default" for h in TABLES)
    op.execute(_analyze_function((*ANALYZED_BEFORE, *defaults)))


def _partition(h: History) -> None:
    old = f"{h.table}_pre0008"
    op.execute(f"ALTER TABLE {h.table} RENAME TO {old}")
    op.execute(f"ALTER TABLE {old} RENAME CONSTRAINT pk_{h.table} TO pk_{old}")
    for name, _, _ in h.indexes:
        op.execute(f"DROP INDEX {name}")
    op.execute(
        f"CREATE TABLE {h.table} (LIKE {old} INCLUDING DEFAULTS INCLUDING CONSTRAINTS, "
        f"CONSTRAINT pk_{h.table} PRIMARY KEY ({h.primary_key})) PARTITION BY RANGE ({h.key})"
    )
    _add_keys_and_indexes(h)
    op.execute(f"CREATE TABLE {h.table}_default PARTITION OF {h.table} DEFAULT")
    for statement in protect(f"{h.table}_default"):
        op.execute(statement)
    # One partition per UTC day that has rows, then today and the days ahead.
    op.execute(
        f"SELECT syncguard_create_history_partition('{h.table}', day) FROM ("
        f"SELECT DISTINCT ({h.key} AT TIME ZONE 'UTC')::date AS day FROM {old} UNION "
        f"SELECT (now() AT TIME ZONE 'UTC')::date + ahead FROM generate_series(0, {AHEAD_DAYS})"
        " AS ahead) AS days ORDER BY day"
    )
    # Before the trigger exists: the rows already carry their business_id.
    op.execute(f"INSERT INTO {h.table} SELECT * FROM {old}")
    op.execute(f"DROP TABLE {old}")
    op.execute(fill_business_id_trigger(h.table))  # cloned onto every partition
    for statement in protect(h.table):
        op.execute(statement)


def _add_keys_and_indexes(h: History) -> None:
    for column, referred, on_delete in h.foreign_keys:
        op.execute(
            f"ALTER TABLE {h.table} ADD CONSTRAINT fk_{h.table}_{column}_{referred} "
            f"FOREIGN KEY ({column}) REFERENCES {referred} (id) ON DELETE {on_delete}"
        )
    for name, columns, method in h.indexes:
        op.execute(f"CREATE INDEX {name} ON {h.table} USING {method} ({columns})")


def downgrade() -> None:
    op.execute(_analyze_function_0007())
    for history in TABLES:
        _unpartition(history)
    for signature in (*_PRIVILEGED, "syncguard_protect_partition(regclass)"):
        op.execute(f"DROP FUNCTION {signature}")
    op.execute("DROP FUNCTION syncguard_history_sub_key(regclass)")
    op.execute("DROP FUNCTION syncguard_history_key(regclass)")


def _unpartition(h: History) -> None:
    partitioned = f"{h.table}_partitioned"
    op.execute(f"ALTER TABLE {h.table} RENAME TO {partitioned}")
    op.execute(f"ALTER TABLE {partitioned} RENAME CONSTRAINT pk_{h.table} TO pk_{partitioned}")
    for name, _, _ in h.indexes:
        op.execute(f"DROP INDEX {name}")
    op.execute(
        f"CREATE TABLE {h.table} (LIKE {partitioned} INCLUDING DEFAULTS INCLUDING CONSTRAINTS, "
        f"CONSTRAINT pk_{h.table} PRIMARY KEY (id))"
    )
    _add_keys_and_indexes(h)
    op.execute(f"INSERT INTO {h.table} SELECT * FROM {partitioned}")
    op.execute(f"DROP TABLE {partitioned}")  # and every partition with it
    op.execute(fill_business_id_trigger(h.table))
    for statement in protect(h.table):
        op.execute(statement)
