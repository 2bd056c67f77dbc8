"""Spans are scrubbed before any exporter sees them: URLs, event attributes, status text."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from syncguard.logging_config import REDACTED
from syncguard.tracing import ScrubbingSpanExporter


def test_every_string_of_a_span_is_scrubbed_on_its_way_out() -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ScrubbingSpanExporter(memory)))
    tracer = provider.get_tracer("test")
    key = "sgk_0123456789abcdef"

    with tracer.start_as_current_span("GET /dashboard/login?key=" + key) as span:
        span.set_attribute("http.url", f"http://h/dashboard/login?key={key}&next=/x")
        span.set_attribute("http.status_code", 400)
        span.set_attribute("tags", ["plain", f"Bearer {key}"])
        span.add_event("exception", {"exception.message": f"refused {key}"})
        span.set_status(Status(StatusCode.ERROR, f"bad key {key}"))

    [finished] = memory.get_finished_spans()
    text = finished.to_json()
    assert key not in text
    assert finished.name == f"GET /dashboard/login?key={REDACTED}"
    assert finished.attributes is not None
    assert (
        finished.attributes["http.url"]
        == f"http://h/dashboard/login?key={REDACTED}&next={REDACTED}"
    )
    assert finished.attributes["http.status_code"] == 400  # numbers are left alone
    assert finished.attributes["tags"] == ("plain", f"Bearer {REDACTED}")
    assert finished.events[0].attributes == {"exception.message": f"refused sgk_{REDACTED}"}
    assert finished.status.description == f"bad key sgk_{REDACTED}"
    # The trace stays whole: same ids as the span that was recorded
    assert finished.context.trace_id == span.get_span_context().trace_id
