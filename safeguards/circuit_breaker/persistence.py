"""The circuit breaker's durable mirror: one upserted ``circuit_breaker_state`` row per circuit."""

from __future__ import annotations

from sqlalchemy import Engine, func, or_
from sqlalchemy.dialects.postgresql import insert

from models import CircuitBreakerState
from safeguards.circuit_breaker.states import CircuitId, CircuitStats
from safeguards.storable import storable_optional
from syncguard.db import get_engine, service_session

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


def upsert_circuit_row(
    circuit: CircuitId, stats: CircuitStats, engine: Engine | None = None
) -> None:
    """Write ``stats`` into the circuit's row (INSERT ... ON CONFLICT DO UPDATE), newest wins."""
    values = {name: getattr(stats, name) for name in _MIRRORED}
    # The reason is the provider's error text.
    values["last_failure_reason"] = storable_optional(stats.last_failure_reason)
    # business_id NULL for a store circuit: the fill_business_id trigger sets it before the
    # conflict check, so the same unique key is found either way.
    statement = insert(CircuitBreakerState).values(
        business_id=circuit.business_id,
        store_id=circuit.store_id,
        circuit_name=circuit.circuit_name,
        **values,
    )
    current, proposed = _TABLE.c, statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=[current.business_id, current.store_id, current.circuit_name],
        set_={**{name: proposed[name] for name in _MIRRORED}, "updated_at": func.now()},
        # Two workers' writes may commit out of order; an older transition must not win.
        where=or_(
            current.state_changed_at.is_(None),
            proposed.state_changed_at.is_(None),
            current.state_changed_at <= proposed.state_changed_at,
        ),
    )
    with service_session(engine or get_engine()) as session:
        session.execute(statement)
