"""Trends over ``system_health_metrics``: one metric bucketed by minute or hour, index-served."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Literal, NamedTuple

from sqlalchemy import text
from sqlalchemy.orm import Session

from models import MetricType
from syncguard.db import session_or_new

Bucket = Literal["minute", "hour"]
#: Width of each bucket kind.
BUCKET_WIDTHS: dict[str, timedelta] = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1)}


class TrendPoint(NamedTuple):
    """One bucket: its start, and the average, extremes and number of the values inside it."""

    bucket_start: datetime
    avg: float
    min: float
    max: float
    samples: int


# Buckets are aligned on a fixed UTC origin (date_bin), so they do not move with the session's
# time zone. Every filter column is in an index: (business_id, measured_at, metric_type,
# metric_name) for a business or the system-wide rows (business_id IS NULL), (store_id,
# measured_at) for a store; metric_type = ANY(...) keeps the type a usable index condition.
_TREND = """
SELECT date_bin(:width, measured_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket_start,
       avg(metric_value) AS avg, min(metric_value) AS min, max(metric_value) AS max,
       count(*) AS samples
FROM system_health_metrics
WHERE metric_type = ANY(:types) AND metric_name = :name
  AND measured_at >= :since AND measured_at < :until AND {scope}
GROUP BY 1
ORDER BY 1
"""


def trend_statement(
    business_id: uuid.UUID | None, store_id: uuid.UUID | None
) -> tuple[str, dict[str, object]]:
    """The trend SQL for this scope and the scope's parameters."""
    params: dict[str, object]
    if store_id is not None:
        scope, params = "store_id = :store_id", {"store_id": store_id}
        if business_id is not None:
            scope += " AND business_id = :business_id"
            params["business_id"] = business_id
    elif business_id is not None:
        scope, params = "business_id = :business_id", {"business_id": business_id}
    else:
        scope, params = "business_id IS NULL", {}
    return _TREND.format(scope=scope), params


def metric_trend(
    name: str,
    *,
    since: datetime,
    until: datetime,
    business_id: uuid.UUID | None = None,
    store_id: uuid.UUID | None = None,
    bucket: Bucket = "minute",
    metric_types: Iterable[MetricType] = tuple(MetricType),
    session: Session | None = None,
) -> list[TrendPoint]:
    """Buckets of ``name`` in [since, until): a store's, a business's, or the system-wide rows."""
    if bucket not in BUCKET_WIDTHS:
        raise ValueError(f"bucket must be one of {sorted(BUCKET_WIDTHS)}, not {bucket!r}")
    sql, params = trend_statement(business_id, store_id)
    params |= {
        "width": BUCKET_WIDTHS[bucket],
        "types": [t.value for t in metric_types],
        "name": name,
        "since": since,
        "until": until,
    }
    with session_or_new(session) as s:
        result = s.execute(text(sql), params)
        return [TrendPoint(r.bucket_start, r.avg, r.min, r.max, r.samples) for r in result]
