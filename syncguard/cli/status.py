"""``syncguard status``: the seed's five status checks as tables, per store, business or overall."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import click
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from models import (
    Business,
    CircuitBreakerState,
    CircuitState,
    FailedJobArchive,
    Store,
    StoreStatus,
    WebhookDeliveryLog,
)
from syncguard.cli.support import database_session
from syncguard.cli.tables import cell, render, render_rows

__all__ = ["SEED_QUERIES", "seed_query", "status"]

#: The seed's "Status Check Commands", verbatim; only the two placeholders are substituted.
SEED_QUERIES: dict[str, str] = {
    "rate_limits": "SELECT * FROM provider_rate_limits WHERE store_id = 'your-store-id';",
    "circuits": "SELECT * FROM circuit_breaker_state WHERE store_id = 'your-store-id';",
    "deliveries": (
        "SELECT * FROM webhook_delivery_log WHERE store_id = 'your-store-id' "
        "ORDER BY created_at DESC LIMIT 10;"
    ),
    "metrics": """SELECT metric_type, metric_name, AVG(metric_value) as avg_value
FROM system_health_metrics
WHERE business_id = 'your-business-id'
AND measured_at > NOW() - INTERVAL '1 hour'
GROUP BY metric_type, metric_name;""",
    "dead_letters": (
        "SELECT * FROM failed_job_archive WHERE business_id = 'your-business-id' "
        "AND reviewed = false;"
    ),
}

#: Title, and the columns shown without ``--wide`` with their labels (the query selects all).
_CHECKS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "rate_limits": (
        "Rate limits",
        (
            ("operation_type", "operation"),
            ("provider", "provider"),
            ("requests_per_minute", "limit/min"),
            ("requests_per_hour", "limit/h"),
            ("requests_per_day", "limit/day"),
            ("concurrency_limit", "in flight"),
            ("current_minute_usage", "used/min"),
            ("current_hour_usage", "used/h"),
            ("current_day_usage", "used/day"),
            ("denied_count", "denied"),
            ("throttled_until", "throttled until"),
        ),
    ),
    "circuits": (
        "Circuit breakers",
        (
            ("circuit_name", "circuit"),
            ("state", "state"),
            ("consecutive_failures", "failures in a row"),
            ("total_calls", "calls"),
            ("total_failures", "failures"),
            ("trip_count", "trips"),
            ("opened_at", "opened at"),
            ("next_attempt_at", "next attempt at"),
            ("last_failure_reason", "last failure"),
        ),
    ),
    "deliveries": (
        "Last 10 webhook deliveries",
        (
            ("created_at", "at"),
            ("webhook_type", "type"),
            ("direction", "direction"),
            ("success", "ok"),
            ("response_code", "status"),
            ("duration_ms", "ms"),
            ("error_message", "error"),
        ),
    ),
    "metrics": (
        "Metric averages, last hour",
        (("metric_type", "type"), ("metric_name", "metric"), ("avg_value", "average")),
    ),
    "dead_letters": (
        "Unreviewed dead letters",
        (
            ("id", "id"),
            ("created_at", "archived at"),
            ("failure_category", "category"),
            ("job_type", "job type"),
            ("retry_count", "retries"),
            ("failure_reason", "reason"),
        ),
    ),
}


def seed_query(
    name: str, *, store_id: uuid.UUID | None = None, business_id: uuid.UUID | None = None
) -> str:
    """The seed's query ``name`` with the ids substituted (UUIDs, so nothing else can slip in)."""
    sql = SEED_QUERIES[name]
    if store_id is not None:
        sql = sql.replace("your-store-id", str(uuid.UUID(str(store_id))))
    if business_id is not None:
        sql = sql.replace("your-business-id", str(uuid.UUID(str(business_id))))
    return sql


@click.command()
@click.option("--business", "business_id", type=click.UUID, help="Only this business.")
@click.option("--store", "store_id", type=click.UUID, help="Only this store.")
@click.option("--wide", is_flag=True, help="Show every column the seed's queries return.")
def status(business_id: uuid.UUID | None, store_id: uuid.UUID | None, wide: bool) -> None:
    """Rate limits, circuits, deliveries, metrics and dead letters of a store, business or all."""
    with database_session() as session:
        if store_id is None and business_id is None:
            _overview(session)
            return
        stores = _stores_in_scope(session, business_id, store_id)
        owner = business_id or stores[0].business_id
        business = session.get(Business, owner)
        assert business is not None  # stores.business_id is a foreign key
        click.echo(f"business {business.name} ({business.slug}, {business.id})")
        for store in stores:
            click.echo(f"\n== store {store.mailbox_address} ({store.provider}, {store.id})")
            click.echo(f"   status {store.status}, last sync {cell(store.last_synced_at)}")
            for name in ("rate_limits", "circuits", "deliveries"):
                _check(session, name, seed_query(name, store_id=store.id), wide)
        click.echo(f"\n== business {business.slug}")
        for name in ("metrics", "dead_letters"):
            _check(session, name, seed_query(name, business_id=business.id), wide)


def _stores_in_scope(
    session: Session, business_id: uuid.UUID | None, store_id: uuid.UUID | None
) -> list[Store]:
    """The store asked for, or every store of the business; a clear error for unknown ids."""
    if business_id is not None and session.get(Business, business_id) is None:
        raise click.ClickException(f"no business {business_id}")
    if store_id is not None:
        store = session.get(Store, store_id)
        if store is None:
            raise click.ClickException(f"no store {store_id}")
        if business_id is not None and store.business_id != business_id:
            raise click.ClickException(
                f"store {store_id} belongs to business {store.business_id}, not {business_id}"
            )
        return [store]
    statement = select(Store).where(Store.business_id == business_id).order_by(Store.created_at)
    return list(session.scalars(statement))


def _check(session: Session, name: str, sql: str, wide: bool) -> None:
    """Run one seed query and print its rows as a titled table."""
    title, columns = _CHECKS[name]
    rows = [dict(row._mapping) for row in session.execute(text(sql))]
    click.echo(f"\n{title}:")
    if wide or not rows:
        click.echo(render_rows(rows))
    else:
        labels = [label for _, label in columns]
        click.echo(render(labels, [[row[key] for key, _ in columns] for row in rows]))


def _overview(session: Session) -> None:
    """Every business in one line each, then the open circuits and the unreviewed archive."""
    click.echo("Businesses:")
    click.echo(render(_SUMMARY_HEADERS, _summary_rows(session)))
    click.echo("\nOpen circuits:")
    circuits = _open_circuits(session)
    click.echo(render(_CIRCUIT_HEADERS, circuits) if circuits else "(none)")
    click.echo("\nUnreviewed dead letters:")
    archive = _unreviewed_counts(session)
    click.echo(render(_ARCHIVE_HEADERS, archive) if archive else "(none)")


_SUMMARY_HEADERS = (
    "business",
    "slug",
    "stores",
    "active",
    "open circuits",
    "unreviewed dead letters",
    "failed deliveries 1h",
)
_CIRCUIT_HEADERS = (
    "business",
    "store",
    "circuit",
    "state",
    "trips",
    "opened at",
    "next attempt at",
    "last failure",
)
_ARCHIVE_HEADERS = ("business", "category", "entries", "oldest")
_OPEN_STATES = (CircuitState.OPEN, CircuitState.HALF_OPEN)


def _summary_rows(session: Session) -> list[list[Any]]:
    """Per business: stores, active stores, open circuits, unreviewed entries, failed deliveries."""
    stores = _counts(
        session,
        select(
            Store.business_id, func.count(), func.count().filter(Store.status == StoreStatus.ACTIVE)
        ).group_by(Store.business_id),
    )
    circuits = _counts(
        session,
        select(CircuitBreakerState.business_id, func.count())
        .where(CircuitBreakerState.state.in_(_OPEN_STATES))
        .group_by(CircuitBreakerState.business_id),
    )
    archive = _counts(
        session,
        select(FailedJobArchive.business_id, func.count())
        .where(FailedJobArchive.reviewed.is_(False))
        .group_by(FailedJobArchive.business_id),
    )
    failed = _counts(
        session,
        select(WebhookDeliveryLog.business_id, func.count())
        .where(
            WebhookDeliveryLog.success.is_(False),
            WebhookDeliveryLog.created_at > func.now() - text("INTERVAL '1 hour'"),
        )
        .group_by(WebhookDeliveryLog.business_id),
    )
    rows: list[list[Any]] = []
    for business in session.scalars(select(Business).order_by(Business.name, Business.slug)):
        total, active = stores.get(business.id, (0, 0))
        rows.append(
            [
                business.name,
                business.slug,
                total,
                active,
                circuits.get(business.id, (0,))[0],
                archive.get(business.id, (0,))[0],
                failed.get(business.id, (0,))[0],
            ]
        )
    return rows


def _counts(session: Session, statement: Any) -> dict[uuid.UUID | None, tuple[int, ...]]:
    """A grouped count query as {business id: the counts}."""
    return {row[0]: tuple(row[1:]) for row in session.execute(statement)}


def _open_circuits(session: Session) -> list[Sequence[Any]]:
    """Circuits open or half-open, oldest opening first, with their business and store."""
    statement = (
        select(
            Business.slug,
            Store.mailbox_address,
            CircuitBreakerState.circuit_name,
            CircuitBreakerState.state,
            CircuitBreakerState.trip_count,
            CircuitBreakerState.opened_at,
            CircuitBreakerState.next_attempt_at,
            CircuitBreakerState.last_failure_reason,
        )
        .join(Business, Business.id == CircuitBreakerState.business_id)
        .outerjoin(Store, Store.id == CircuitBreakerState.store_id)
        .where(CircuitBreakerState.state.in_(_OPEN_STATES))
        .order_by(CircuitBreakerState.opened_at.nulls_last())
    )
    return [tuple(row) for row in session.execute(statement)]


def _unreviewed_counts(session: Session) -> list[Sequence[Any]]:
    """Unreviewed archive entries counted per business and failure category."""
    statement = (
        select(
            Business.slug,
            FailedJobArchive.failure_category,
            func.count(),
            func.min(FailedJobArchive.created_at),
        )
        .outerjoin(Business, Business.id == FailedJobArchive.business_id)
        .where(FailedJobArchive.reviewed.is_(False))
        .group_by(Business.slug, FailedJobArchive.failure_category)
        .order_by(Business.slug, FailedJobArchive.failure_category)
    )
    return [tuple(row) for row in session.execute(statement)]
