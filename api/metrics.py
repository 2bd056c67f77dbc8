"""``GET /metrics``: Prometheus text, counters from Redis and gauges read at scrape time."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import text

from safeguards.health_metrics.prometheus import RedisCounterCollector
from safeguards.health_metrics.queue_depth import queue_depths
from safeguards.rate_limit.app_quota import get_app_quota_pool
from syncguard.db import service_session
from tasks import app as celery_app
from tasks.queues import QUEUE_NAMES

router = APIRouter()

# One cheap statement: each count is served by an index on its filter column.
_DATABASE_GAUGES = text(
    "SELECT (SELECT count(*) FROM circuit_breaker_state WHERE state = 'open') AS circuits_open,"
    " (SELECT count(*) FROM failed_job_archive WHERE reviewed = false) AS archive_backlog,"
    " (SELECT count(*) FROM sync_jobs WHERE status = 'running') AS sync_jobs_running"
)
_DATABASE_HELP = {
    "circuits_open": "Circuits open now.",
    "archive_backlog": "Dead-letter archive entries not reviewed yet.",
    "sync_jobs_running": "Sync jobs running now.",
}


def broker_gauges() -> Iterable[Metric]:
    """Messages waiting in each queue."""
    gauge = GaugeMetricFamily(
        "syncguard_queue_depth", "Messages waiting in the queue.", labels=["queue"]
    )
    with celery_app.connection_for_read() as connection:
        for queue, depth in queue_depths(connection, QUEUE_NAMES).items():
            gauge.add_metric([queue], float(depth))
    return [gauge]


def database_gauges() -> Iterable[Metric]:
    """Open circuits, archive backlog and jobs in flight, system-wide."""
    with service_session() as session:
        row = session.execute(_DATABASE_GAUGES).one()._mapping
    return [
        GaugeMetricFamily(f"syncguard_{name}", doc, value=float(row[name]))
        for name, doc in _DATABASE_HELP.items()
    ]


def app_quota_gauges() -> Iterable[Metric]:
    """Each provider app's quota, live use and lifetime lease counters (labels provider, app)."""
    labels = ["provider", "app"]
    limit = GaugeMetricFamily(
        "syncguard_app_quota_limit_units",
        "Units a provider app may spend per window.",
        labels=labels,
    )
    used = GaugeMetricFamily(
        "syncguard_app_quota_used_units",
        "Units of the app's quota leased in its current window, less those given back.",
        labels=labels,
    )
    window = GaugeMetricFamily(
        "syncguard_app_quota_window_seconds", "Length of the app quota's window.", labels=labels
    )
    granted = CounterMetricFamily(
        "syncguard_app_quota_granted_units", "Units leased to workers.", labels=labels
    )
    returned = CounterMetricFamily(
        "syncguard_app_quota_returned_units", "Leased units given back unspent.", labels=labels
    )
    refused = CounterMetricFamily(
        "syncguard_app_quota_refusals", "Lease requests the app's quota refused.", labels=labels
    )
    for usage in get_app_quota_pool().usages():
        values = [usage.provider, usage.app]
        limit.add_metric(values, float(usage.limit))
        used.add_metric(values, float(usage.used))
        window.add_metric(values, usage.window_s)
        granted.add_metric(values, float(usage.granted_total))
        returned.add_metric(values, float(usage.returned_total))
        refused.add_metric(values, float(usage.refused_total))
    return [limit, used, window, granted, returned, refused]


@cache
def registry() -> CollectorRegistry:
    """The registry a scrape renders: nothing of this process's memory, only shared state."""
    registry = CollectorRegistry(auto_describe=False)
    collector = RedisCounterCollector(
        {"broker": broker_gauges, "postgres": database_gauges, "app_quota": app_quota_gauges}
    )
    registry.register(collector)
    return registry


@router.get("/metrics")
def metrics() -> Response:
    """Every metric in the Prometheus text exposition format."""
    return Response(generate_latest(registry()), media_type=CONTENT_TYPE_LATEST)
