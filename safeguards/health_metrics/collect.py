"""The periodic snapshot: queues, jobs in flight, archive backlog, circuits, usage and webhooks.

Every figure comes from one aggregate statement (``GROUPING SETS`` yields the per-business rows
and the system-wide total together). System-wide rows carry ``business_id`` NULL; per-business
rows carry the business, so the seed's per-business status query finds them. A per-business
gauge is written while it is non-zero, plus one 0 row when it drops to zero, so "latest value"
readers see the drop without a row per idle business per minute.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert, text
from sqlalchemy.orm import Session

from models import MetricType, SystemHealthMetric
from safeguards.health_metrics.recorder import Metric
from syncguard.db import service_session
from syncguard.settings import get_settings

#: A store's rate-limit mirror older than this is idle and not reported, seconds.
RATE_LIMIT_ACTIVE_S = 600
#: A subscription's latest health reading is looked for this far back, seconds (Beat checks every
#: minute; bounding the lookup lets PostgreSQL read only the recent partitions of the log).
HEALTH_LOOKBACK_S = 3600

#: Per-business gauges: name -> (metric type, unit, aggregate over the live rows).
BUSINESS_GAUGES: dict[str, tuple[MetricType, str, str]] = {
    "sync_jobs_running": (
        MetricType.QUEUE,
        "jobs",
        "SELECT business_id, GROUPING(business_id) AS total, count(*) AS value "
        "FROM sync_jobs WHERE status = 'running'",
    ),
    "archive_backlog": (
        MetricType.ERRORS,
        "entries",
        "SELECT business_id, GROUPING(business_id) AS total, count(*) AS value "
        "FROM failed_job_archive WHERE reviewed = false",
    ),
    "circuits_open": (
        MetricType.SAFEGUARDS,
        "circuits",
        "SELECT business_id, GROUPING(business_id) AS total, count(*) AS value "
        "FROM circuit_breaker_state WHERE state = 'open'",
    ),
}
_PER_BUSINESS = " GROUP BY GROUPING SETS ((business_id), ())"

# ``success IN (true, false)`` lets the (success, created_at) index serve the time range.
_WEBHOOKS = text(
    "SELECT business_id, GROUPING(business_id) AS total, count(*) AS deliveries,"
    " avg(success::int) AS success_rate,"
    " percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50,"
    " percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95"
    " FROM webhook_delivery_log"
    " WHERE direction = 'inbound' AND success IN (true, false)"
    " AND created_at > :since AND created_at <= :now" + _PER_BUSINESS
)
_RATE_LIMITS = text(
    "SELECT business_id, store_id, provider, current_minute_usage, current_day_usage,"
    " denied_count FROM provider_rate_limits"
    " WHERE operation_type = '*' AND usage_synced_at > :since"
)
#: Per business and overall only: a per-subscription gauge (one row per subscription per minute,
#: 101,002 of 117,000 rows at 100,000 stores) would copy ``webhook_health_log``, which already
#: holds every subscription's history.
_HEALTH = text(
    "SELECT s.business_id, GROUPING(s.business_id) AS total, avg(h.health_score) AS score"
    " FROM webhook_subscriptions s CROSS JOIN LATERAL ("
    "  SELECT health_score FROM webhook_health_log l WHERE l.subscription_id = s.id"
    "  AND l.checked_at > :since AND l.checked_at <= :now"
    "  ORDER BY l.checked_at DESC LIMIT 1) h"
    " WHERE s.status = 'active'"
    " GROUP BY GROUPING SETS ((s.business_id), ())"
)
_PREVIOUSLY_NONZERO = text(
    "SELECT DISTINCT business_id, metric_name FROM system_health_metrics"
    " WHERE metric_type = ANY(:types) AND metric_name = ANY(:names)"
    " AND measured_at > :since AND measured_at < :now"
    " AND business_id IS NOT NULL AND store_id IS NULL AND metric_value <> 0"
)


def collect_metrics(queue_depths: dict[str, int], engine: Engine | None = None) -> dict[str, int]:
    """Write one snapshot into ``system_health_metrics``; returns rows written per metric type."""
    with service_session(engine) as session:
        now: datetime = session.execute(text("SELECT now()")).scalar_one()
        rows = [
            Metric(
                MetricType.QUEUE, "queue_depth", float(n), "messages", {"queue": q}, None, None, now
            )
            for q, n in sorted(queue_depths.items())
        ]
        rows += business_gauges(session, now)
        rows += webhook_rates(session, now)
        rows += rate_limit_usage(session, now)
        rows += subscription_health(session, now)
        if rows:
            session.execute(insert(SystemHealthMetric), [asdict(m) for m in rows])
    written: dict[str, int] = {}
    for row in rows:
        written[row.metric_type.value] = written.get(row.metric_type.value, 0) + 1
    return written


def _window_s() -> float:
    return get_settings().metrics_collect_interval_s


def business_gauges(session: Session, now: datetime) -> list[Metric]:
    """Jobs in flight, archive backlog and open circuits: total, and per business."""
    rows: list[Metric] = []
    seen: set[tuple[uuid.UUID, str]] = set()
    for name, (metric_type, unit, sql) in BUSINESS_GAUGES.items():
        for r in session.execute(text(sql + _PER_BUSINESS)):
            if r.total:
                rows.append(Metric(metric_type, name, float(r.value), unit, {}, None, None, now))
            elif r.business_id is not None:  # entries without a business count in the total
                seen.add((r.business_id, name))
                rows.append(
                    Metric(metric_type, name, float(r.value), unit, {}, r.business_id, None, now)
                )
    since = now - timedelta(seconds=1.5 * _window_s())
    previous = session.execute(
        _PREVIOUSLY_NONZERO,
        {
            "types": sorted({t.value for t, _, _ in BUSINESS_GAUGES.values()}),
            "names": list(BUSINESS_GAUGES),
            "since": since,
            "now": now,
        },
    )
    for business_id, name in previous:
        if (business_id, name) not in seen:
            metric_type, unit, _ = BUSINESS_GAUGES[name]
            rows.append(Metric(metric_type, name, 0.0, unit, {}, business_id, None, now))
    return rows


def webhook_rates(session: Session, now: datetime) -> list[Metric]:
    """Inbound deliveries of the last interval: count, success rate, p50 and p95 latency."""
    since = now - timedelta(seconds=_window_s())
    rows: list[Metric] = []
    for r in session.execute(_WEBHOOKS, {"since": since, "now": now}):
        business_id = None if r.total else r.business_id
        if not r.total and business_id is None:
            continue  # deliveries no store claimed: counted in the total only
        figures: list[tuple[str, Any, str]] = [
            ("webhook_deliveries", r.deliveries, "deliveries"),
            ("webhook_success_rate", r.success_rate, "ratio"),
            ("webhook_latency_p50_ms", r.p50, "ms"),
            ("webhook_latency_p95_ms", r.p95, "ms"),
        ]
        window = {"window_s": _window_s()}
        rows += [
            Metric(MetricType.WEBHOOKS, name, float(value), unit, window, business_id, None, now)
            for name, value, unit in figures
            if value is not None
        ]
    return rows


def rate_limit_usage(session: Session, now: datetime) -> list[Metric]:
    """Per active store: usage of the minute and day windows, and denials so far."""
    since = now - timedelta(seconds=RATE_LIMIT_ACTIVE_S)
    rows: list[Metric] = []
    denied_total = 0
    for r in session.execute(_RATE_LIMITS, {"since": since}):
        tags = {"provider": r.provider}
        denied_total += r.denied_count
        rows += [
            Metric(MetricType.USAGE, name, float(value), unit, tags, r.business_id, r.store_id, now)
            for name, value, unit in (
                ("rate_limit_minute_usage", r.current_minute_usage, "cost_units"),
                ("rate_limit_day_usage", r.current_day_usage, "cost_units"),
            )
        ]
        rows.append(
            Metric(
                MetricType.SAFEGUARDS,
                "rate_limit_denied",
                float(r.denied_count),
                "requests",
                tags,
                r.business_id,
                r.store_id,
                now,
            )
        )
    if rows:
        rows.append(
            Metric(
                MetricType.SAFEGUARDS,
                "rate_limit_denied",
                float(denied_total),
                "requests",
                {},
                None,
                None,
                now,
            )
        )
    return rows


def subscription_health(session: Session, now: datetime) -> list[Metric]:
    """Average of each live subscription's latest score (within ``HEALTH_LOOKBACK_S``), per
    business and overall (``subscription_health_avg``); one statement."""
    rows: list[Metric] = []
    since = now - timedelta(seconds=HEALTH_LOOKBACK_S)
    for r in session.execute(_HEALTH, {"since": since, "now": now}):
        if r.score is None or (not r.total and r.business_id is None):
            continue  # no reading, or subscriptions without a business (in the total only)
        business_id = None if r.total else r.business_id
        rows.append(
            Metric(
                MetricType.WEBHOOKS,
                "subscription_health_avg",
                float(r.score),
                "score",
                {},
                business_id,
                None,
                now,
            )
        )
    return rows
