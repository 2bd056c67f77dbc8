"""OAuth token endpoint (refresh_token grant) and the JWKS that verifies push OIDC tokens.

The key itself is ``push.PushSigner``; the app's context holds it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from providers.emulator.context import context
from providers.emulator.faults import RequestFault, take_token_fault

router = APIRouter()


def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


@router.post("/oauth2/token")
@router.post("/oauth2/v2.0/token")
async def token(request: Request) -> JSONResponse:
    """Exchange a refresh token for a short-lived access token."""
    ctx = context(request)
    form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
    if form.get("grant_type") != "refresh_token":
        return _oauth_error("unsupported_grant_type", "only refresh_token is supported")
    fault: RequestFault | None = None
    with ctx.state.lock:
        box = next(
            (
                b
                for b in ctx.state.mailboxes.values()
                if b.refresh_token == form.get("refresh_token")
            ),
            None,
        )
        if box is not None:
            box.stats.requests["oauth.token"] += 1
            fault = take_token_fault(box.faults)
    if box is None:
        return _oauth_error("invalid_grant", "Bad Request")
    if fault is not None and fault.server_status is not None:
        body = {"error": "temporarily_unavailable", "error_description": "Backend Error"}
        return JSONResponse(body, status_code=fault.server_status, headers=fault.headers())
    if form.get("client_id") != box.client_id or form.get("client_secret") != box.client_secret:
        return _oauth_error("invalid_client", "The OAuth client was not found.", 401)
    if box.revoked:
        return _oauth_error("invalid_grant", "Token has been expired or revoked.")
    lifetime = ctx.config.access_token_lifetime_s
    access = ctx.state.issue_access_token(box.address, lifetime)
    return JSONResponse(
        {
            "access_token": access,
            "expires_in": int(lifetime) or 1,
            "token_type": "Bearer",
            "scope": "https://www.googleapis.com/auth/gmail.readonly Mail.Read",
        }
    )


@router.get("/_emulator/oauth2/v3/certs")
async def certs(request: Request) -> dict[str, Any]:
    """The JWKS that verifies push tokens."""
    return context(request).signer.jwks()
