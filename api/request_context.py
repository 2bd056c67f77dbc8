"""A request id for every API request: bound to its log lines and echoed to the caller.

A pure ASGI middleware (not Starlette's ``BaseHTTPMiddleware``, which runs the route in another
task): the id is bound in ``syncguard.log_context`` for the whole request, so every line the
request logs carries ``request_id``, and it is returned as ``X-Request-ID``. A caller's own
``X-Request-ID`` (a proxy's or a load balancer's) is kept when it is a plain token, so one id
follows the request through both logs; anything else is replaced, never echoed.
"""

from __future__ import annotations

import re
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from syncguard import log_context

__all__ = ["HEADER", "RequestContext"]

#: The header that carries the request id, both ways.
HEADER = "X-Request-ID"
_ACCEPTED = re.compile(r"[A-Za-z0-9._-]{8,64}")


class RequestContext:
    """Binds ``request_id`` for each HTTP request and sets the ``X-Request-ID`` response header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request with its id bound; other scopes (lifespan) pass through."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        with log_context.bound(request_id=request_id):
            await self.app(scope, receive, send_with_id)


def request_id_of(scope: Scope) -> str:
    """The caller's ``X-Request-ID`` when it is 8 to 64 of ``[A-Za-z0-9._-]``, else a new one."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = str(value.decode("latin-1"))
            if _ACCEPTED.fullmatch(text):
                return text
    return uuid.uuid4().hex
