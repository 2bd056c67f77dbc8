"""The emulator's ASGI app factory: routes, error handlers, per-endpoint status counters."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from providers.emulator import control, gmail, gmail_batch, graph, oauth
from providers.emulator.config import EmulatorConfig
from providers.emulator.context import EmulatorContext, context
from providers.emulator.guard import ApiError, gmail_error, graph_error
from providers.emulator.notify import Notifier
from providers.emulator.push import PushSettings, PushSigner
from providers.emulator.state import EmulatorError, EmulatorState


def create_app(settings: EmulatorConfig | None = None) -> FastAPI:
    """A fresh emulator with its own state, key and notifier thread."""
    config = settings or EmulatorConfig()
    state = EmulatorState(config.history_id_start)
    push = PushSettings(
        config.gmail_push_url, config.gmail_push_audience, config.service_account_email
    )
    signer = PushSigner()
    ctx = EmulatorContext(config, state, signer, Notifier(config, state, push, signer), push)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        ctx.notifier.close()

    app = FastAPI(title="syncguard provider emulator", lifespan=lifespan)
    app.state.emulator = ctx
    for module in (oauth, gmail, gmail_batch, graph, control):
        app.include_router(module.router)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(EmulatorError, _emulator_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.middleware("http")(_count_statuses)
    return app


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _emulator_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, EmulatorError)
    return JSONResponse({"error": exc.message}, status_code=exc.status)


async def _invalid_request(request: Request, exc: Exception) -> Response:
    """Bad parameters: 400 in the provider's shape, 422 on the control API."""
    assert isinstance(exc, RequestValidationError)
    message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    if request.url.path.startswith("/gmail/"):
        return gmail_error(400, message, "invalidArgument").response()
    if request.url.path.startswith("/v1.0/"):
        return graph_error(400, message, "BadRequest").response()
    return JSONResponse({"error": message, "detail": exc.errors()}, status_code=422)


async def _count_statuses(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    start = time.time()  # wall clock: the log is compared across calls, not timed
    response = await call_next(request)
    stat: tuple[str, str] | None = getattr(request.state, "stat", None)
    if stat is not None:
        ctx = context(request)
        with ctx.state.lock:
            box = ctx.state.mailboxes.get(stat[0])
            if box is not None:
                box.stats.record_response(stat[1], response.status_code, start, time.time())
    return response
