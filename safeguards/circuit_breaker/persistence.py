"""The circuit breaker's durable mirror: one upserted ``circuit_breaker_state`` row per circuit."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, func, or_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError

from models import CircuitBreakerState
from safeguards.circuit_breaker.states import CircuitId, CircuitStats
from safeguards.storable import storable_optional
from syncguard.db import get_engine, service_session

log = logging.getLogger(__name__)

_TABLE = CircuitBreakerState.__table__

#: Columns copied from the Redis statistics on every write.
_MIRRORED = (
    "state",
    "consecutive_failures",
    "failure_count",
    "success_count",
    "total_calls",
    "total_failures",
    "trip_count",
    "half_open_calls",
    "last_failure_reason",
    "last_failure_at",
    "last_success_at",
    "opened_at",
    "next_attempt_at",
    "state_changed_at",
)


def _values(circuit: CircuitId, stats: CircuitStats) -> dict[str, Any]:
    values = {name: getattr(stats, name) for name in _MIRRORED}
    # The reason is the provider's error text.
    values["last_failure_reason"] = storable_optional(stats.last_failure_reason)
    # business_id NULL for a store circuit: the fill_business_id trigger sets it before the
    # conflict check, so the same unique key is found either way.
    return {
        "business_id": circuit.business_id,
        "store_id": circuit.store_id,
        "circuit_name": circuit.circuit_name,
        **values,
    }


def upsert_circuit_rows(
    rows: Sequence[tuple[CircuitId, CircuitStats]], engine: Engine | None = None
) -> int:
    """Write each circuit's stats into its row: one INSERT ... ON CONFLICT DO UPDATE for all.

    Newest wins: a row whose ``state_changed_at`` is later than the proposed one is kept. The
    circuits must be distinct (PostgreSQL refuses to update one row twice in one statement).
    Returns the number of rows written: a circuit whose store or business no longer exists is
    dropped (logged). Raises SQLAlchemyError when PostgreSQL fails otherwise.
    """
    if not rows:
        return 0
    try:
        _upsert(rows, engine)
    except IntegrityError:
        # A circuit whose store or business was deleted meanwhile fails the whole statement:
        # write the chunk row by row so the rest still lands, and drop the orphans.
        return sum(_upsert_or_drop(row, engine) for row in rows)
    return len(rows)


def _upsert_or_drop(row: tuple[CircuitId, CircuitStats], engine: Engine | None) -> int:
    try:
        _upsert([row], engine)
    except IntegrityError as exc:
        log.warning("circuit %s/%s not mirrored: %s", row[0].scope, row[0].circuit_name, exc.orig)
        return 0
    return 1


def _upsert(rows: Sequence[tuple[CircuitId, CircuitStats]], engine: Engine | None) -> None:
    # One statement executed for many parameter sets: compiled once (a multi-VALUES literal of
    # thousands of rows took seconds to compile) and sent by psycopg in one pipelined batch.
    with service_session(engine or get_engine()) as session:
        session.connection().execute(_UPSERT, [_values(c, s) for c, s in rows])


def _upsert_statement() -> Any:
    statement = insert(CircuitBreakerState)
    current, proposed = _TABLE.c, statement.excluded
    return statement.on_conflict_do_update(
        index_elements=[current.business_id, current.store_id, current.circuit_name],
        set_={**{name: proposed[name] for name in _MIRRORED}, "updated_at": func.now()},
        # Two workers' writes may commit out of order; an older transition must not win.
        where=or_(
            current.state_changed_at.is_(None),
            proposed.state_changed_at.is_(None),
            current.state_changed_at <= proposed.state_changed_at,
        ),
    )


_UPSERT = _upsert_statement()


def upsert_circuit_row(
    circuit: CircuitId, stats: CircuitStats, engine: Engine | None = None
) -> None:
    """Write ``stats`` into the circuit's row (INSERT ... ON CONFLICT DO UPDATE), newest wins.

    Raises SQLAlchemyError (IntegrityError for a store or business that does not exist)."""
    _upsert([(circuit, stats)], engine)
