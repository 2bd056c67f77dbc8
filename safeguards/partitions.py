"""Daily partitions of the history tables: created ahead, found, and expired whole.

``system_health_metrics``, ``webhook_delivery_log`` and ``webhook_health_log`` are partitioned by
RANGE on their timestamp, one partition per UTC day named ``<table>_pYYYYMMDD`` plus a DEFAULT
partition ``<table>_default`` that catches any row without its day (so an insert never fails).
``webhook_delivery_log``'s days are split by LIST (success) into ``_ok`` and ``_failed`` leaves.
The DDL runs inside migration 0008's SECURITY DEFINER functions (the service role owns nothing).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Connection, Engine, text

#: How many days after today get their partition on every maintenance run.
DAYS_AHEAD = 7

#: The partitioned history tables and their partition key (migration 0008).
HISTORY_KEYS = {
    "system_health_metrics": "measured_at",
    "webhook_delivery_log": "created_at",
    "webhook_health_log": "checked_at",
}

_CREATE = text("SELECT syncguard_create_history_partition(CAST(:parent AS regclass), :day)")
_DROP = text("SELECT syncguard_drop_history_partition(CAST(:part AS regclass))")
_TRUNCATE = text("SELECT syncguard_truncate_history_partition(CAST(:part AS regclass))")
_CHILDREN = text(
    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
    " WHERE i.inhparent = CAST(:parent AS regclass)"
)

_LEAVES = text(
    "SELECT relid::text FROM pg_partition_tree(CAST(:table AS regclass)) WHERE isleaf"
    " ORDER BY relid::text"
)


@dataclass(frozen=True)
class DayPartition:
    """One day's partition: rows with ``lower <= key < upper`` (UTC midnights)."""

    name: str
    day: date
    leaves: tuple[str, ...] = ()

    @property
    def upper(self) -> datetime:
        """The first instant past this partition, UTC."""
        return datetime.combine(self.day + timedelta(days=1), datetime.min.time(), UTC)


def default_partition(table: str) -> str:
    """The name of ``table``'s DEFAULT partition."""
    return f"{table}_default"


def day_partitions(conn: Connection, table: str) -> list[DayPartition]:
    """``table``'s day partitions, oldest first, each with its leaves (if sub-partitioned).

    Raises ``sqlalchemy.exc.ProgrammingError`` if ``table`` does not exist.
    """
    pattern = re.compile(rf"^{re.escape(table)}_p(\d{{8}})$")
    found = []
    for name in conn.execute(_CHILDREN, {"parent": table}).scalars():
        match = pattern.match(name)
        if match:
            leaves = tuple(sorted(conn.execute(_CHILDREN, {"parent": name}).scalars()))
            day = datetime.strptime(match.group(1), "%Y%m%d").replace(tzinfo=UTC).date()
            found.append(DayPartition(name, day, leaves))
    return sorted(found, key=lambda p: p.day)


def ensure_partitions(
    conn: Connection, today: date, days_ahead: int = DAYS_AHEAD
) -> dict[str, list[str]]:
    """Create every history table's partitions from ``today`` to ``today + days_ahead``.

    Idempotent (an existing partition is left alone; concurrent runs serialize on an advisory
    lock in the function). Rows of a new day already in the DEFAULT partition move into it.
    Returns the partitions created, per table.
    """
    created: dict[str, list[str]] = {}
    for table in HISTORY_KEYS:
        created[table] = []
        for offset in range(days_ahead + 1):
            day = today + timedelta(days=offset)
            if conn.execute(_CREATE, {"parent": table, "day": day}).scalar_one():
                created[table].append(f"{table}_p{day:%Y%m%d}")
    return created


def drop_partition(conn: Connection, name: str) -> int:
    """Detach and drop one day partition; the rows it held (counted just before)."""
    return int(conn.execute(_DROP, {"part": name}).scalar_one())


def truncate_leaf(conn: Connection, name: str) -> int:
    """Empty one leaf of a sub-partitioned day; the rows it held (counted just before)."""
    return int(conn.execute(_TRUNCATE, {"part": name}).scalar_one())


def leaves(conn: Connection, table: str) -> list[str]:
    """The plain tables that hold ``table``'s rows: its leaf partitions, or itself."""
    found = list(conn.execute(_LEAVES, {"table": table}).scalars())
    return found or [table]  # pg_partition_tree lists nothing for a plain table


def count_rows(conn: Connection, name: str) -> int:
    """Rows in one partition or leaf (``name`` comes from ``day_partitions``, not a caller)."""
    return int(conn.execute(text(f'SELECT count(*) FROM "{name}"')).scalar_one())


def expire_days(
    engine: Engine,
    table: str,
    rules: Sequence[tuple[str | None, datetime]],
    dry_run: bool,
    expired: list[str],
    prepare: Callable[[Connection], None],
) -> int:
    """Drop ``table``'s days wholly past every rule's cutoff, empty leaves past their own.

    ``rules`` are (leaf suffix or None, cutoff). A day goes once its last instant is at or
    before the oldest cutoff; a leaf (``<day>_ok``) once the day is past its rule's cutoff. Each
    drop or truncate is its own transaction, begun by ``prepare`` (which sets the lock timeout:
    DETACH takes an ACCESS EXCLUSIVE lock on the parent for a moment). In a dry run only counts.
    Appends each partition dropped, and each leaf that held rows, to ``expired``; returns the
    rows they held. Raises ``sqlalchemy.exc.OperationalError`` on a lock timeout.
    """
    with engine.connect() as conn:
        days = day_partitions(conn, table)
    removed, oldest = 0, min(cutoff for _, cutoff in rules)
    for day in days:
        whole = day.upper <= oldest
        targets = (
            [(day.name, drop_partition)]
            if whole
            else [
                (f"{day.name}_{leaf}", truncate_leaf)
                for leaf, cutoff in rules
                if leaf and day.upper <= cutoff and f"{day.name}_{leaf}" in day.leaves
            ]
        )
        for name, expire in targets:
            with engine.begin() as conn:
                prepare(conn)
                held = count_rows(conn, name) if dry_run else expire(conn, name)
            removed += held
            if held or whole:
                expired.append(name)
    return removed
