"""The read model of the JSON API and the dashboard: what the seed's status checks show.

Every function reads through the session it is given (a tenant's is RLS-scoped) and also
filters by ``business_id`` when one is given: the operator's optional narrowing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.orm import Session

from api.errors import OUTAGE_ERRORS
from models import (
    Alert,
    AlertStatus,
    CircuitBreakerState,
    FailedJobArchive,
    ProviderRateLimit,
    Store,
    SyncJob,
    WebhookHealthLog,
    WebhookSubscription,
)
from models.safeguards import ALL_OPERATIONS
from safeguards.rate_limit.limiter import get_rate_limiter

logger = logging.getLogger(__name__)

Row = dict[str, Any]
#: Any SELECT, whatever its columns.
AnySelect = TypeVar("AnySelect", bound=Select[*tuple[Any, ...]])


def _scoped(statement: AnySelect, column: Any, business_id: uuid.UUID | None) -> AnySelect:
    return statement if business_id is None else statement.where(column == business_id)


def _columns(row: object, names: Sequence[str]) -> Row:
    return {name: getattr(row, name) for name in names}


def stores(session: Session, business_id: uuid.UUID | None) -> list[Store]:
    """The stores in scope, by mailbox address."""
    statement = select(Store).order_by(Store.mailbox_address)
    return list(session.scalars(_scoped(statement, Store.business_id, business_id)))


CIRCUIT_FIELDS = (
    "store_id",
    "business_id",
    "circuit_name",
    "state",
    "consecutive_failures",
    "failure_count",
    "success_count",
    "total_calls",
    "total_failures",
    "trip_count",
    "last_failure_reason",
    "last_failure_at",
    "opened_at",
    "next_attempt_at",
    "state_changed_at",
    "updated_at",
)


def circuits(session: Session, business_id: uuid.UUID | None) -> list[Row]:
    """Every circuit's written-through state (transitions are written at once), open ones first."""
    table = CircuitBreakerState
    statement = select(table).order_by(table.state.desc(), table.circuit_name, table.store_id)
    return [
        _columns(row, CIRCUIT_FIELDS)
        for row in session.scalars(_scoped(statement, table.business_id, business_id))
    ]


def rate_limits(session: Session, business_id: uuid.UUID | None) -> list[Row]:
    """Per store: live window usage against limits from Redis, or the PostgreSQL mirror."""
    mirrors = {
        row.store_id: row
        for row in session.scalars(
            _scoped(
                select(ProviderRateLimit).where(ProviderRateLimit.operation_type == ALL_OPERATIONS),
                ProviderRateLimit.business_id,
                business_id,
            )
        )
    }
    return [_usage(store, mirrors.get(store.id)) for store in stores(session, business_id)]


def _usage(store: Store, mirror: ProviderRateLimit | None) -> Row:
    """One store's usage: live when Redis answers, else the mirror row with its age."""
    base: Row = {
        "store_id": store.id,
        "business_id": store.business_id,
        "mailbox_address": store.mailbox_address,
        "provider": store.provider,
    }
    try:
        live = get_rate_limiter().usage(str(store.id), provider=store.provider)
    except OUTAGE_ERRORS:
        logger.warning("rate-limit usage of %s: Redis unreachable, showing the mirror", store.id)
        return base | _mirrored(mirror)
    return base | {
        "source": "live",
        "windows": [
            {"name": w.name, "limit": w.limit, "used": w.used, "remaining": w.remaining}
            for w in live.windows
        ],
        "throttled_until": _epoch(live.throttled_until),
        "leases_in_use": live.leases_in_use,
        "concurrency": live.concurrency,
        "denied_count": live.denied_count,
        "last_request_at": _epoch(live.last_request_at),
    }


def _mirrored(mirror: ProviderRateLimit | None) -> Row:
    if mirror is None:
        return {"source": "unavailable", "windows": []}
    windows = [
        ("minute", mirror.current_minute_usage, mirror.requests_per_minute),
        ("hour", mirror.current_hour_usage, mirror.requests_per_hour),
        ("day", mirror.current_day_usage, mirror.requests_per_day),
    ]
    return {
        "source": "mirror",
        "synced_at": mirror.usage_synced_at,
        "windows": [{"name": n, "used": used, "limit": limit} for n, used, limit in windows],
        "throttled_until": mirror.throttled_until,
        "denied_count": mirror.denied_count,
        "last_request_at": mirror.last_request_at,
    }


def _epoch(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def subscriptions(session: Session, business_id: uuid.UUID | None) -> list[Row]:
    """Each subscription with its latest health reading and time to expiry."""
    latest = (
        select(WebhookHealthLog)
        .ext(distinct_on(WebhookHealthLog.subscription_id))
        .order_by(WebhookHealthLog.subscription_id, WebhookHealthLog.checked_at.desc())
        .subquery()
    )
    statement = (
        select(
            WebhookSubscription,
            latest.c.health_score,
            latest.c.failure_patterns,
            latest.c.checked_at,
            Store.mailbox_address,
        )
        .join(Store, Store.id == WebhookSubscription.store_id)
        .outerjoin(latest, latest.c.subscription_id == WebhookSubscription.id)
        .order_by(WebhookSubscription.expires_at.asc().nulls_last())
    )
    now = datetime.now(UTC)
    found = []
    for sub, score, patterns, checked_at, address in session.execute(
        _scoped(statement, WebhookSubscription.business_id, business_id)
    ):
        found.append(
            {
                "id": sub.id,
                "store_id": sub.store_id,
                "business_id": sub.business_id,
                "mailbox_address": address,
                "provider": sub.provider,
                "status": sub.status,
                "expires_at": sub.expires_at,
                "seconds_to_expiry": None
                if sub.expires_at is None
                else int((sub.expires_at - now).total_seconds()),
                "health_score": score,
                "failure_patterns": list(patterns or []),
                "health_checked_at": checked_at,
                "renewal_count": sub.renewal_count,
                "consecutive_renewal_failures": sub.consecutive_renewal_failures,
                "last_renewed_at": sub.last_renewed_at,
                "last_notification_at": sub.last_notification_at,
            }
        )
    return found


ALERT_FIELDS = (
    "id",
    "business_id",
    "store_id",
    "rule",
    "severity",
    "status",
    "message",
    "details",
    "occurrences",
    "raised_at",
    "last_seen_at",
    "resolved_at",
)


def alerts(
    session: Session, business_id: uuid.UUID | None, status: AlertStatus | None, limit: int
) -> list[Row]:
    """Alerts, newest first; open and resolved unless ``status`` says which."""
    statement = select(Alert).order_by(Alert.raised_at.desc(), Alert.id).limit(limit)
    if status is not None:
        statement = statement.where(Alert.status == status)
    return [
        _columns(row, ALERT_FIELDS)
        for row in session.scalars(_scoped(statement, Alert.business_id, business_id))
    ]


def store_status(session: Session, business_id: uuid.UUID | None) -> list[Row]:
    """The seed's status checks per store: sync, circuits, rate limit, subscription, backlog."""
    circuits_by_store: dict[Any, list[Row]] = {}
    for circuit in circuits(session, business_id):
        circuits_by_store.setdefault(circuit["store_id"], []).append(circuit)
    usage = {row["store_id"]: row for row in rate_limits(session, business_id)}
    subs: dict[Any, Row] = {}
    for sub in subscriptions(session, business_id):
        subs.setdefault(sub["store_id"], sub)
    last_jobs = _last_jobs(session, business_id)
    backlog = _backlog(session, business_id)
    return [
        {
            "store_id": store.id,
            "business_id": store.business_id,
            "mailbox_address": store.mailbox_address,
            "display_name": store.display_name,
            "provider": store.provider,
            "status": store.status,
            "status_reason": store.status_reason,
            "last_synced_at": store.last_synced_at,
            "last_sync_job": last_jobs.get(store.id),
            "circuits": [
                {k: c[k] for k in ("circuit_name", "state", "next_attempt_at")}
                for c in circuits_by_store.get(store.id, [])
            ],
            "rate_limit": usage.get(store.id),
            "subscription": subs.get(store.id),
            "archive_backlog": backlog.get(store.id, 0),
        }
        for store in stores(session, business_id)
    ]


def _last_jobs(session: Session, business_id: uuid.UUID | None) -> dict[Any, Row]:
    statement = (
        select(SyncJob)
        .ext(distinct_on(SyncJob.store_id))
        .order_by(SyncJob.store_id, SyncJob.created_at.desc())
    )
    fields = ("id", "kind", "trigger", "status", "created_at", "finished_at", "error_message")
    return {
        job.store_id: _columns(job, fields)
        for job in session.scalars(_scoped(statement, SyncJob.business_id, business_id))
    }


def _backlog(session: Session, business_id: uuid.UUID | None) -> dict[Any, int]:
    """Unreviewed archive entries per store."""
    table = FailedJobArchive
    statement = (
        select(table.store_id, func.count())
        .where(table.reviewed.is_(False))
        .group_by(table.store_id)
    )
    return {
        sid: int(n)
        for sid, n in session.execute(_scoped(statement, table.business_id, business_id))
    }
