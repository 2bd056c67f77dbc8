"""``/api/v1/``: the JSON API of the seed's status checks, read through the caller's key."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from sqlalchemy import func, select

from api.auth import Caller, GuardedRoute, read_session, scope, settings_of
from api.params import DEFAULT_LIMIT, Moment, NameText, check_limit, check_order
from api.v1 import archive as v1_archive
from api.v1 import jobs as v1_jobs
from api.v1 import queries as v1_queries
from models import AlertStatus, MetricType, SystemHealthMetric
from safeguards.health_metrics.trends import BUCKET_WIDTHS, Bucket, metric_trend

#: Most buckets one trend answers (a day of minutes).
MAX_TREND_BUCKETS = 1440

router = APIRouter(prefix="/api/v1", route_class=GuardedRoute)
router.include_router(v1_archive.router)
router.include_router(v1_jobs.router)

#: ``?business_id=``: an operator's narrowing to one business (a tenant may only name its own).
BusinessParam = Annotated[uuid.UUID | None, Query()]


def as_json(payload: Any, status: int = 200) -> JSONResponse:
    """``payload`` (UUIDs, datetimes, enums included) as a JSON response."""
    return JSONResponse(jsonable_encoder(payload), status)


@router.get("/status")
def status(caller: Caller, business_id: BusinessParam = None) -> JSONResponse:
    """Per store: sync status and last job, circuits, rate limit, subscription, archive backlog."""
    business = scope(caller, business_id)
    with read_session(caller) as session:
        stores = v1_queries.store_status(session, business)
    return as_json({"stores": stores, "generated_at": datetime.now(UTC)})


@router.get("/circuits")
def circuits(caller: Caller, business_id: BusinessParam = None) -> JSONResponse:
    """Every circuit's state and counters, open circuits first."""
    with read_session(caller) as session:
        return as_json({"circuits": v1_queries.circuits(session, scope(caller, business_id))})


@router.get("/rate-limits")
def rate_limits(caller: Caller, business_id: BusinessParam = None) -> JSONResponse:
    """Each store's window usage against its limits."""
    with read_session(caller) as session:
        usage = v1_queries.rate_limits(session, scope(caller, business_id))
    return as_json({"rate_limits": usage})


@router.get("/subscriptions")
def subscriptions(caller: Caller, business_id: BusinessParam = None) -> JSONResponse:
    """Each webhook subscription with its health score and expiry, soonest expiry first."""
    with read_session(caller) as session:
        subs = v1_queries.subscriptions(session, scope(caller, business_id))
    return as_json({"subscriptions": subs})


@router.get("/alerts")
def alerts(
    request: Request,
    caller: Caller,
    status: AlertStatus | None = None,
    limit: int = DEFAULT_LIMIT,
    business_id: BusinessParam = None,
) -> JSONResponse:
    """Alerts, newest first; ``status`` = open or resolved."""
    check_limit(request, limit)
    with read_session(caller) as session:
        found = v1_queries.alerts(session, scope(caller, business_id), status, limit)
    return as_json({"alerts": found})


@router.get("/metrics/names")
def metric_names(
    request: Request,
    caller: Caller,
    since: Moment | None = None,
    business_id: BusinessParam = None,
) -> JSONResponse:
    """The metrics measured since ``since`` (default: the trend window), with sample counts."""
    start = since or datetime.now(UTC) - timedelta(seconds=settings_of(request).api_metric_window_s)
    table = SystemHealthMetric
    statement = (
        select(table.metric_type, table.metric_name, func.count(), func.max(table.measured_at))
        .where(table.measured_at >= start)
        .group_by(table.metric_type, table.metric_name)
        .order_by(func.count().desc(), table.metric_name)
    )
    # The same scope as a trend: a business's rows, or (operator, no business) system-wide ones.
    business = scope(caller, business_id)
    statement = statement.where(
        table.business_id.is_(None) if business is None else table.business_id == business
    )
    with read_session(caller) as session:
        rows = session.execute(statement).all()
    return as_json(
        {"metrics": [{"type": t, "name": n, "samples": c, "last_at": at} for t, n, c, at in rows]}
    )


@router.get("/metrics")
def metrics(
    request: Request,
    caller: Caller,
    name: Annotated[NameText, Query(max_length=100)],
    bucket: Bucket = "minute",
    type: MetricType | None = None,
    since: Moment | None = None,
    until: Moment | None = None,
    store_id: uuid.UUID | None = None,
    business_id: BusinessParam = None,
) -> JSONResponse:
    """The trend of metric ``name`` by minute or hour: a tenant's own, or the operator's choice."""
    end = until or datetime.now(UTC)
    start = since or end - timedelta(seconds=settings_of(request).api_metric_window_s)
    check_order(start, end)
    if (end - start) / BUCKET_WIDTHS[bucket] > MAX_TREND_BUCKETS:
        raise HTTPException(
            400, f"at most {MAX_TREND_BUCKETS} {bucket} buckets per trend: narrow since..until"
        )
    business = scope(caller, business_id)
    with read_session(caller) as session:
        points = metric_trend(
            name,
            since=start,
            until=end,
            business_id=business,
            store_id=store_id,
            bucket=bucket,
            metric_types=tuple(MetricType) if type is None else (type,),
            session=session,
        )
    return as_json(
        {
            "name": name,
            "bucket": bucket,
            "since": start,
            "until": end,
            "business_id": business,
            "points": [p._asdict() for p in points],
        }
    )
