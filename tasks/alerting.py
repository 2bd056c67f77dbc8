"""Alerting: the Beat task that evaluates every rule, and the circuit listener that alerts at once.

Importing this module (every worker does, through ``TASK_MODULES``) registers the listener, so
a store circuit opened or closed by a call in this process raises or resolves its alert without
waiting for Beat; transitions caused in other processes are caught by the next evaluation.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from models import CircuitState
from safeguards.alerts.rules import AlertThresholds, CircuitReading, circuit_alert, circuit_key
from safeguards.alerts.store import evaluate, raise_alert, resolve_alert, store_business
from safeguards.circuit_breaker.breaker import add_listener
from safeguards.circuit_breaker.states import CircuitStats
from safeguards.single_flight import SingleFlight, new_owner
from tasks import app
from tasks.events import announce

log = logging.getLogger(__name__)

TASK_NAME = "tasks.alerting.evaluate_alerts"
#: One evaluation at a time across all workers; a crashed one blocks the next for this long, s.
EVALUATION_LEASE_S = 300.0
_EVALUATION = SingleFlight("alert-evaluation", lease_s=EVALUATION_LEASE_S)
_SCOPE = "all"


@app.task(name=TASK_NAME)  # type: ignore[untyped-decorator]
def evaluate_alerts() -> dict[str, Any]:
    """Evaluate every alert rule: raise the new, resolve those whose condition cleared."""
    owner = new_owner()
    if not _EVALUATION.acquire(_SCOPE, owner):
        log.info("alert evaluation skipped: another one is running")
        return {"skipped": True}
    try:
        result = evaluate(AlertThresholds.from_settings(), publish=announce)
    finally:
        _EVALUATION.release(_SCOPE, owner)  # a request folded meanwhile waits for the next beat
    return {"raised": result.raised, "firing": len(result.firing), "resolved": result.resolved}


def on_circuit_transition(
    store_id: uuid.UUID | None,
    circuit_name: str,
    old_state: CircuitState,
    new_state: CircuitState,
    stats: CircuitStats,
) -> None:
    """Raise a store circuit's alert when it opens; resolve it (``alert.resolved``) on closing."""
    if store_id is None:
        return  # business-wide (outbound endpoint) circuits: see safeguards.alerts.store
    if new_state is CircuitState.CLOSED:
        resolve_alert(circuit_key(store_id, circuit_name), publish=announce)
        return
    if new_state is not CircuitState.OPEN:
        return  # open -> half-open: still not closed, the open alert stands
    business_id = store_business(store_id)
    if business_id is None:
        log.debug("circuit %s of unknown store %s: no alert", circuit_name, store_id)
        return
    reading = CircuitReading(
        business_id,
        store_id,
        circuit_name,
        new_state,
        stats.trip_count,
        stats.last_failure_reason,
    )
    spec = circuit_alert(reading)
    if spec is not None:
        raise_alert(spec, publish=announce)


add_listener(on_circuit_transition)

__all__ = ["evaluate_alerts", "on_circuit_transition"]
