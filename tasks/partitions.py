"""Beat's partition maintenance: the history tables' day partitions, created ahead."""

from __future__ import annotations

import logging
from datetime import date
from typing import cast

from sqlalchemy import text

from safeguards import partitions
from syncguard.db import get_engine
from syncguard.settings import get_settings
from tasks import app

log = logging.getLogger(__name__)

_TODAY_UTC = text("SELECT CAST(now() AT TIME ZONE 'UTC' AS date)")
_LOCK_TIMEOUT = text("SELECT set_config('lock_timeout', :ms, true)")


@app.task(name="tasks.partitions.ensure_history_partitions")  # type: ignore[untyped-decorator]
def ensure_history_partitions(days_ahead: int = partitions.DAYS_AHEAD) -> dict[str, list[str]]:
    """Create each history table's partitions for today (UTC) and ``days_ahead`` days after it.

    Idempotent: a run finds the partitions that exist and makes only the missing ones, in one
    transaction under the cleanup's lock timeout (ATTACH briefly locks the DEFAULT partition).
    Beat runs it hourly, so a day's partition exists ``days_ahead`` days before its first row;
    should every run fail for that long, rows land in the DEFAULT partition and the next
    successful run moves them into their day. Returns the partitions created, per table.
    """
    with get_engine().begin() as conn:
        conn.execute(_LOCK_TIMEOUT, {"ms": str(get_settings().cleanup_lock_timeout_ms)})
        today = cast(date, conn.execute(_TODAY_UTC).scalar_one())
        created = partitions.ensure_partitions(conn, today, days_ahead)
    if any(created.values()):
        log.info("history partitions created: %s", created)
    return created
