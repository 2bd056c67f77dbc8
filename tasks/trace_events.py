"""The guard's decision on a provider call, as an event on the current trace span.

Events, not spans: a decision takes no time of its own, and an event keeps it on the span of
the task that asked (OpenTelemetry's span events, "Add Events" in the tracing API
specification). Names: ``guard.allowed``, ``guard.deferred`` (the limiter had no room),
``guard.circuit_open``. On a no-op span (tracing off) this costs one call.
"""

from __future__ import annotations

import uuid
from typing import Protocol

from opentelemetry import trace

from safeguards.errors import CircuitOpen, Refused

__all__ = ["guard_decision"]


class CallScope(Protocol):
    """What the guard decides about (``tasks.guard.CallScope``; a protocol: no import cycle)."""

    @property
    def store_id(self) -> uuid.UUID: ...
    @property
    def provider(self) -> object: ...
    @property
    def circuit_name(self) -> str: ...


def guard_decision(scope: CallScope, operation: str, refused: Refused | None = None) -> None:
    """Add the guard's decision on ``operation`` for ``scope`` to the current span."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    if refused is None:
        name = "guard.allowed"
    else:
        name = "guard.circuit_open" if isinstance(refused, CircuitOpen) else "guard.deferred"
    attributes: dict[str, str | float] = {
        "syncguard.store_id": str(scope.store_id),
        "syncguard.provider": str(scope.provider),
        "syncguard.circuit_name": scope.circuit_name,
        "syncguard.operation": operation,
    }
    if refused is not None:
        attributes["syncguard.retry_after_s"] = refused.retry_after_s
    span.add_event(name, attributes)
