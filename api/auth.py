"""Who is calling: an API key from ``Authorization: Bearer``, or the dashboard's session cookie.

A tenant key reads through ``tenant_session`` so PostgreSQL's row-level security, not only
our WHERE clauses, keeps it inside its business; an operator key reads through the service role.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session
from starlette.responses import Response

from api.api_keys import Principal, verify
from api.errors import OUTAGE_ERRORS
from api.sessions import session_principal
from syncguard.db import service_session, tenant_session
from syncguard.settings import Settings

logger = logging.getLogger(__name__)

#: Header a cookie-authenticated POST must carry (the dashboard's fetch sets it): a form on
#: another site cannot set it, so the cookie alone never authorises an action.
CSRF_HEADER = "X-Syncguard-Dashboard"


def settings_of(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


def unauthorized(reason: str) -> HTTPException:
    """A 401 carrying ``reason`` and the Bearer challenge."""
    return HTTPException(401, reason, headers={"WWW-Authenticate": 'Bearer realm="syncguard"'})


def presented_credential(request: Request) -> tuple[str | None, bool]:
    """The Bearer API key, else the login cookie's session token; and whether it is the cookie."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("the Authorization header must be 'Bearer <API key>'")
        return token.strip(), False
    cookie = request.cookies.get(settings_of(request).dashboard_cookie_name)
    return cookie, cookie is not None


def authenticate(request: Request) -> Principal:
    """The verified principal of the request; 401 when the key or session is missing or ended."""
    credential, from_cookie = presented_credential(request)
    if not credential:
        raise unauthorized("missing API key: send 'Authorization: Bearer <API key>'")
    if from_cookie:
        principal = session_principal(credential)
        if principal is None:
            raise unauthorized("the dashboard session has ended: log in again")
    else:
        principal = verify(credential)
        if principal is None:
            raise unauthorized("invalid or revoked API key")
    if from_cookie and request.method not in ("GET", "HEAD") and CSRF_HEADER not in request.headers:
        raise HTTPException(403, f"a cookie-authenticated {request.method} needs {CSRF_HEADER}")
    return principal


#: The verified caller, as a route parameter.
Caller = Annotated[Principal, Depends(authenticate)]


def require_operator(principal: Principal, action: str) -> None:
    """403 unless ``principal`` is an operator, naming the refused ``action``."""
    if not principal.is_operator:
        raise HTTPException(403, f"tenant API keys are read-only: {action} needs an operator key")


def scope(principal: Principal, business_id: uuid.UUID | None) -> uuid.UUID | None:
    """The business a read is limited to: a tenant's own, or the operator's choice (None: all)."""
    if principal.is_operator:
        return business_id
    if business_id is not None and business_id != principal.business_id:
        raise HTTPException(403, "a tenant API key reads only its own business")
    return principal.business_id


@contextmanager
def read_session(principal: Principal) -> Iterator[Session]:
    """A read transaction as ``principal``: RLS-scoped for a tenant, the service role otherwise."""
    if principal.is_operator:
        with service_session() as session:
            yield session
        return
    assert principal.business_id is not None  # the api_keys CHECK constraint guarantees it
    with tenant_session(principal.business_id) as session:
        yield session


class GuardedRoute(APIRoute):
    """A route whose validation errors and outages answer ``{"error": ...}`` like every refusal."""

    def get_route_handler(self) -> Callable[[Request], object]:  # type: ignore[override]
        """The route's handler, wrapped."""
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return JSONResponse({"error": describe(exc)}, 422)
            except OUTAGE_ERRORS:
                logger.warning(
                    "%s %s: dependency down", request.method, request.url.path, exc_info=True
                )
                return JSONResponse({"error": "a backing service is unavailable; retry"}, 503)

        return guarded


def describe(exc: RequestValidationError) -> str:
    """One readable sentence per invalid input: where it is and what is wrong."""
    parts = []
    for error in exc.errors():
        location = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body",))
        parts.append(f"{location or 'body'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"
