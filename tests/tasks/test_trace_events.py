"""The guard's decisions as events on the current span, read with the SDK's in-memory exporter."""

from __future__ import annotations

import uuid
from contextlib import AbstractContextManager

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import Engine

import models
from models import Provider
from safeguards.circuit_breaker.breaker import record_circuit_breaker_result
from safeguards.errors import CircuitOpen, RateLimited
from syncguard.db import service_session
from tasks.guard import CallScope, guarded_call
from tests.factories import make_business, make_store


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def task_span(exporter: InMemorySpanExporter) -> AbstractContextManager[object]:
    """A recording span, current while open, of a local provider (not the process's)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test").start_as_current_span("task")


def _scope(engine: Engine, concurrency_limit: int | None = None) -> CallScope:
    with service_session(engine) as session:
        store = make_store(session, make_business(session))
        if concurrency_limit is not None:
            session.add(
                models.ProviderRateLimit(
                    store_id=store.id, provider="gmail", concurrency_limit=concurrency_limit
                )
            )
        return CallScope(store.id, Provider.GMAIL, f"gmail-{uuid.uuid4().hex[:6]}")


def _events(exporter: InMemorySpanExporter) -> list[tuple[str, dict[str, object]]]:
    [span] = exporter.get_finished_spans()
    assert isinstance(span, ReadableSpan)
    return [(e.name, dict(e.attributes or {})) for e in span.events]


def test_an_admitted_call_is_an_allowed_event_with_its_store_and_operation(
    engine: Engine, exporter: InMemorySpanExporter
) -> None:
    scope = _scope(engine)
    with task_span(exporter), guarded_call(scope, "messages.get"):
        pass

    [(name, attributes)] = _events(exporter)
    assert name == "guard.allowed"
    assert attributes["syncguard.store_id"] == str(scope.store_id)
    assert attributes["syncguard.operation"] == "messages.get"
    assert attributes["syncguard.provider"] == "gmail"


def test_a_full_limiter_is_a_deferred_event_with_its_wait(
    engine: Engine, exporter: InMemorySpanExporter
) -> None:
    scope = _scope(engine, concurrency_limit=1)
    # The outer call holds the store's only lease: the inner one is refused.
    held = guarded_call(scope, "messages.get")
    with task_span(exporter), held, pytest.raises(RateLimited), guarded_call(scope, "messages.get"):
        pass

    names = [name for name, _ in _events(exporter)]
    assert names == ["guard.allowed", "guard.deferred"]
    assert "syncguard.retry_after_s" in _events(exporter)[1][1]


def test_an_open_circuit_is_a_circuit_open_event(
    engine: Engine, exporter: InMemorySpanExporter
) -> None:
    scope = _scope(engine)
    for _ in range(50):  # past any failure threshold: the circuit opens
        record_circuit_breaker_result(scope.store_id, scope.circuit_name, False)
    with task_span(exporter), pytest.raises(CircuitOpen), guarded_call(scope, "messages.get"):
        pass

    [(name, attributes)] = _events(exporter)
    assert name == "guard.circuit_open"
    assert attributes["syncguard.circuit_name"] == scope.circuit_name
