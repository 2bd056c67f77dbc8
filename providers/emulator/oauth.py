"""OAuth token endpoint (refresh_token grant) and the RS256 key that signs push OIDC tokens."""

from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from jwt.algorithms import RSAAlgorithm

from providers.emulator.context import context

#: Issuer of Google's push OIDC tokens.
GOOGLE_ISSUER = "https://accounts.google.com"
#: Lifetime of a push OIDC token, in seconds.
PUSH_TOKEN_LIFETIME_S = 3600

router = APIRouter()


class PushSigner:
    """The emulator's own RSA key: signs push tokens, publishes the JWKS."""

    def __init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = secrets.token_hex(8)

    def jwks(self) -> dict[str, Any]:
        """The public key as a JWK set, like Google's /oauth2/v3/certs."""
        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        jwk.update(kid=self.kid, alg="RS256", use="sig")
        return {"keys": [jwk]}

    def sign_push_token(self, audience: str, email: str) -> str:
        """An OIDC token as Pub/Sub attaches to a push request."""
        now = int(time.time())
        claims = {
            "aud": audience,
            "iss": GOOGLE_ISSUER,
            "email": email,
            "email_verified": True,
            "sub": "emulator-push-service-account",
            "iat": now,
            "exp": now + PUSH_TOKEN_LIFETIME_S,
        }
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid})


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
    if box is None:
        return _oauth_error("invalid_grant", "Bad Request")
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
