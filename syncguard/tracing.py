"""OpenTelemetry tracing for every process: one trace from a webhook to the provider calls.

The official instrumentations carry the trace across the whole path: FastAPI (the webhook
request), Celery (the publish, with the trace context in the message headers, and the task
run), httpx (each provider call) and SQLAlchemy (each statement). ``configure_tracing`` sets
them up once per process; the API calls it at start-up, the worker in each forked child
(``worker_process_init``: a child started after the parent set up the tracer would share the
parent's exporter threads, which do not survive ``fork``).

Nothing is exported unless asked for: OTLP over HTTP when OpenTelemetry's own
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set (the
exporter reads it and the other ``OTEL_EXPORTER_OTLP_*`` variables itself, per the
OpenTelemetry specification's "OTLP Exporter Configuration"), and JSON lines to the file of the
``trace_file`` setting (tests, local debugging). With neither, no tracer provider is installed
and every span is OpenTelemetry's no-op span: no overhead beyond a function call.

Spans leave the process scrubbed like log lines (``syncguard.logging_config.scrub``): the
instrumentations record full URLs (``http.url``, ``url.full``, ``http.target``), whose query
strings may carry a credential (a pasted login link, Graph's ``validationToken``, a delta
token), and exception events carry exception text. Every exporter is wrapped in
``ScrubbingSpanExporter``, which masks every string in a span's name, attributes, event
attributes and status before the span is written anywhere.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Status
from opentelemetry.util.types import Attributes

from syncguard.logging_config import scrub
from syncguard.settings import Settings, get_settings

__all__ = [
    "JsonLinesSpanExporter",
    "ScrubbingSpanExporter",
    "configure_tracing",
    "otlp_endpoint",
    "tracing_enabled",
]

#: The environment variables that turn on OTLP export (OpenTelemetry specification).
OTLP_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")

_lock = threading.Lock()
_configured_pid: int | None = None


class JsonLinesSpanExporter(SpanExporter):
    """Appends each finished span to ``path`` as one JSON line (``ReadableSpan.to_json``).

    Each batch is one ``write`` on a file opened with ``O_APPEND``, so the lines of several
    processes sharing the file do not interleave within a line.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Append ``spans``; FAILURE when the file cannot be written."""
        text = "".join(span.to_json(indent=None) + "\n" for span in spans)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS


class ScrubbingSpanExporter(SpanExporter):
    """Hands ``inner`` copies of the spans with every string scrubbed (see the module doc)."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export scrubbed copies of ``spans`` through the wrapped exporter."""
        return self.inner.export([scrubbed_span(span) for span in spans])

    def shutdown(self) -> None:
        """Shut the wrapped exporter down."""
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Flush the wrapped exporter."""
        return self.inner.force_flush(timeout_millis)


def _scrub_value(value: object) -> object:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, tuple | list):
        return tuple(scrub(v) if isinstance(v, str) else v for v in value)
    return value


def _scrub_attributes(attributes: Attributes) -> dict[str, object]:
    return {key: _scrub_value(value) for key, value in (attributes or {}).items()}


def scrubbed_span(span: ReadableSpan) -> ReadableSpan:
    """A copy of a finished ``span`` whose name, attributes, events and status are scrubbed."""
    status = span.status
    if status.description:
        status = Status(status.status_code, scrub(status.description))
    events = [
        Event(event.name, _scrub_attributes(event.attributes), event.timestamp)  # type: ignore[arg-type]
        for event in span.events
    ]
    return ReadableSpan(
        name=scrub(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_scrub_attributes(span.attributes),  # type: ignore[arg-type]
        events=events,
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def otlp_endpoint() -> str | None:
    """The OTLP endpoint configured in the environment, or None."""
    for name in OTLP_ENDPOINT_VARIABLES:
        if os.environ.get(name):
            return os.environ[name]
    return None


def tracing_enabled(settings: Settings | None = None) -> bool:
    """Whether this process exports spans anywhere (an OTLP endpoint or a trace file)."""
    return otlp_endpoint() is not None or (settings or get_settings()).trace_file is not None


def configure_tracing(service_name: str, settings: Settings | None = None) -> bool:
    """Install the tracer provider and instrument Celery, httpx and SQLAlchemy, once a process.

    ``service_name`` is the ``service.name`` resource attribute unless ``OTEL_SERVICE_NAME``
    names it. Returns whether tracing is on (False: nothing configured, nothing done). Call it
    in the process that runs the work (a forked worker child, not its parent: a provider's
    exporter threads do not survive ``fork``, and OpenTelemetry allows one provider a process).
    """
    global _configured_pid
    settings = settings or get_settings()
    if not tracing_enabled(settings):
        return False
    with _lock:
        if _configured_pid == os.getpid():
            return True
        trace.set_tracer_provider(_provider(service_name, settings))
        _instrument_libraries()
        _configured_pid = os.getpid()
    return True


def _provider(service_name: str, settings: Settings) -> TracerProvider:
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    if otlp_endpoint() is not None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(ScrubbingSpanExporter(OTLPSpanExporter())))
    if settings.trace_file is not None:
        # Synchronous: a span is on disk when it ends, even if the process is killed next.
        exporter = ScrubbingSpanExporter(JsonLinesSpanExporter(settings.trace_file))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def _instrument_libraries() -> None:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    celery = CeleryInstrumentor()  # type: ignore[no-untyped-call]
    for instrumentor in (celery, HTTPXClientInstrumentor()):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()
    database = SQLAlchemyInstrumentor()
    if not database.is_instrumented_by_opentelemetry:
        # Its declared range stops below SQLAlchemy 2.1, whose engine events (the only API it
        # uses: before/after_cursor_execute, handle_error) are unchanged; checked by the tests.
        database.instrument(skip_dep_check=True)
