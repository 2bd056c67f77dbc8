"""The inbound webhook application: Gmail push, Graph notifications, and a health check."""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from sqlalchemy import text
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import dashboard, dashboard_jobs, gmail, metrics, outlook, v1
from api.auth import describe
from api.errors import BAD_VALUE_ERRORS, OUTAGE_ERRORS, log_redacted
from api.push_auth import PushTokenVerifier
from api.request_context import RequestContext
from syncguard.db import service_session
from syncguard.settings import Settings, get_settings
from syncguard.tracing import configure_tracing

access_log = logging.getLogger("api.access")


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app reading ``settings`` (default: the process-wide settings)."""
    # /docs (Swagger UI) and /openapi.json describe the webhooks and /api/v1: public facts,
    # every route still asks its own credentials. ReDoc would be a second copy of the same.
    app = FastAPI(title="syncguard", docs_url="/docs", redoc_url=None)
    app.state.settings = settings or get_settings()
    app.state.push_verifier = PushTokenVerifier(app.state.settings)
    app.include_router(gmail.router)
    app.include_router(outlook.router)
    app.include_router(v1.router)
    app.include_router(dashboard.router)
    app.include_router(dashboard_jobs.router)
    app.mount("/dashboard/static", dashboard.static_files, name="dashboard-static")
    app.include_router(metrics.router)
    app.add_api_route("/healthz", healthz, methods=["GET"])
    # In the OpenAPI document like every route, so the property test covers it too.
    app.add_api_route("/", home, methods=["GET"])
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for error in BAD_VALUE_ERRORS:
        app.add_exception_handler(error, _bad_value)
    app.add_middleware(AccessLog)
    # Outermost (added last): the access log's lines carry the request id too.
    app.add_middleware(RequestContext)
    if configure_tracing("syncguard-api", app.state.settings):
        # The webhook request's span is the root of the trace the enqueued task continues.
        FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,metrics")
    return app


def home() -> RedirectResponse:
    """``/`` is where a person lands from the banner: the dashboard (which asks for a key)."""
    return RedirectResponse("/dashboard", status_code=307)


def healthz() -> JSONResponse:
    """200 when the database answers ``SELECT 1``, else 503."""
    try:
        with service_session() as session:
            session.execute(text("SELECT 1"))
    except OUTAGE_ERRORS:
        access_log.warning("health check: database unreachable", exc_info=True)
        return JSONResponse({"status": "unavailable", "error": "database unreachable"}, 503)
    return JSONResponse({"status": "ok"})


async def _http_error(request: Request, exc: Exception) -> Response:
    """Routing errors (404, 405) in the same ``{"error": ...}`` shape as every refusal."""
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    """Invalid parameters of any route (not only /api/v1's): 422 naming each, never echoing it."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"error": describe(exc)}, 422)


async def _bad_value(request: Request, exc: Exception) -> Response:
    """A value the database refused (see BAD_VALUE_ERRORS): 400, logged without the value."""
    log_redacted(
        access_log,
        logging.WARNING,
        "%s %s: a request value reached SQL unvalidated",
        exc,
        request.method,
        request.url.path,
    )
    return JSONResponse({"error": "a request value is not valid text or is out of range"}, 400)


class AccessLog:
    """Notes when a request arrived (``request.state.started``, read by the receivers); logs
    method, path (no query: tokens), status and time; answers an unhandled exception with 500.

    A pure ASGI middleware: as Starlette's ``BaseHTTPMiddleware`` (``app.middleware("http")``)
    it ran every request's route in a task of its own behind a memory stream, ~10 % of the
    Graph receiver's CPU (py-spy under bench/receiver.py's load).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request and log its line; other scopes (lifespan) pass through."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        scope.setdefault("state", {})["started"] = started
        status = 0

        async def send_noting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting)
        except Exception as exc:
            # Answered here so the server's own "Exception in ASGI application" log, which
            # prints the exception's text (bound parameters included), never runs.
            log_redacted(
                access_log, logging.ERROR, "%s %s failed", exc, scope["method"], scope["path"]
            )
            if not status:  # else the answer has begun: all that is left is to end it
                status = 500
                await JSONResponse({"error": "internal error"}, 500)(scope, receive, send)
        access_log.info(
            "%s %s -> %d in %.1f ms",
            scope["method"],
            scope["path"],
            status,
            (time.monotonic() - started) * 1000,
        )
