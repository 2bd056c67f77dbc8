"""The distributed circuit breaker: vocabulary (``states``), decisions (``breaker``, Lua in
``circuit_breaker.lua``) and the durable mirror (``persistence``)."""

from safeguards.circuit_breaker.breaker import (
    add_listener,
    check_circuit_breaker,
    flush_stats_to_postgres,
    record_circuit_breaker_result,
    reset_circuit_breaker,
)
from safeguards.circuit_breaker.states import CircuitBreakerConfig, CircuitStats

__all__ = [
    "CircuitBreakerConfig",
    "CircuitStats",
    "add_listener",
    "check_circuit_breaker",
    "flush_stats_to_postgres",
    "record_circuit_breaker_result",
    "reset_circuit_breaker",
]
