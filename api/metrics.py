"""``GET /metrics``: Prometheus text, counters from Redis and gauges read at scrape time."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import text

from safeguards.health_metrics.prometheus import RedisCounterCollector
from safeguards.health_metrics.queue_depth import queue_depths
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


@cache
def registry() -> CollectorRegistry:
    """The registry a scrape renders: nothing of this process's memory, only shared state."""
    registry = CollectorRegistry(auto_describe=False)
    collector = RedisCounterCollector({"broker": broker_gauges, "postgres": database_gauges})
    registry.register(collector)
    return registry


@router.get("/metrics")
def metrics() -> Response:
    """Every metric in the Prometheus text exposition format."""
    return Response(generate_latest(registry()), media_type=CONTENT_TYPE_LATEST)
