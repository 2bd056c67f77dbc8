"""Verifying the OIDC token Pub/Sub attaches to a Gmail push: signature, claims, service account."""

from __future__ import annotations

import json
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from api.errors import Rejected
from syncguard.settings import Settings

#: Issuers Google's OIDC tokens carry (both spellings occur).
GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")
#: Claims a push token must have.
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "email"]
#: The only signature algorithm Google uses for these tokens; never trust the header's choice.
ALGORITHMS = ["RS256"]

#: Token errors in the order they are tested (subclasses first), with the reason we answer.
_TOKEN_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "push token expired"),
    (jwt.ImmatureSignatureError, "push token not yet valid"),
    (jwt.InvalidAudienceError, "push token audience mismatch"),
    (jwt.InvalidIssuerError, "push token issuer is not Google"),
    (jwt.MissingRequiredClaimError, "push token lacks a required claim"),
    (jwt.InvalidSignatureError, "push token signature invalid"),
    (jwt.InvalidAlgorithmError, "push token algorithm not allowed"),
    (jwt.PyJWKClientError, "push token signed by an unknown key"),
    (jwt.DecodeError, "push token malformed"),
)


class PushTokenVerifier:
    """Checks push tokens against static keys from settings or a JWKS URL cached for a TTL."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._static = _static_keys(settings.gmail_push_keys)
        # PyJWKClient caches the key set per process for ``lifespan`` and refetches (with a
        # cooldown) when a token names an unknown kid, which is how Google rotates keys.
        self._jwks = jwt.PyJWKClient(
            settings.gmail_push_jwks_url,
            cache_jwk_set=True,
            lifespan=settings.gmail_push_jwks_ttl_s,
            timeout=settings.gmail_push_jwks_timeout_s,
        )

    def verify(self, authorization: str | None, endpoint_url: str) -> dict[str, Any]:
        """The verified claims of the bearer token, or a 401/403 Rejected (503 unconfigured)."""
        account = self._settings.gmail_push_service_account
        if not account:
            raise Rejected(503, "gmail push service account is not configured")
        token = _bearer(authorization)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._signing_key(token),
                algorithms=ALGORITHMS,
                audience=self._settings.gmail_push_audience or endpoint_url,
                issuer=GOOGLE_ISSUERS,
                leeway=self._settings.gmail_push_leeway_s,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.PyJWKClientConnectionError:
            raise  # Google's JWKS unreachable: an outage (503), not the sender's fault
        except (jwt.InvalidTokenError, jwt.PyJWKClientError) as exc:
            raise Rejected(401, _reason(exc)) from exc
        email = claims.get("email")
        if not isinstance(email, str) or email.casefold() != account.casefold():
            raise Rejected(403, "push token email is not the push service account")
        if claims.get("email_verified") not in (True, "true"):
            raise Rejected(403, "push token email is not verified")
        return claims

    def _signing_key(self, token: str) -> Any:
        if self._static is None:
            return self._jwks.get_signing_key_from_jwt(token).key
        kid = jwt.get_unverified_header(token).get("kid")
        if None in self._static:  # a PEM key has no kid: it verifies whatever the header says
            return self._static[None]
        if kid not in self._static:
            raise jwt.PyJWKClientError("no static key matches the token's kid")
        return self._static[kid]


def _bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Rejected(401, "missing bearer token")
    return token.strip()


def _reason(exc: Exception) -> str:
    for error_type, reason in _TOKEN_ERRORS:
        if isinstance(exc, error_type):
            return reason
    return "push token invalid"


def _static_keys(text: str) -> dict[str | None, Any] | None:
    """Keys by kid from a JWKS JSON, or {None: key} from a PEM public key or certificate."""
    text = text.strip()
    if not text:
        return None
    if text.startswith("{"):
        key_set = jwt.PyJWKSet.from_dict(json.loads(text))
        return {jwk.key_id: jwk.key for jwk in key_set.keys}
    data = text.encode()
    if b"BEGIN CERTIFICATE" in data:
        return {None: x509.load_pem_x509_certificate(data).public_key()}
    return {None: load_pem_public_key(data)}
