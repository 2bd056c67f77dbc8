"""Who the emulator's pushes come from: where Gmail pushes go, and the key that signs them.

Kept apart from the routes (``oauth``) and the per-app bundle (``context``) so the notifier can
use both without importing either: the emulator's modules form no import loop.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

#: Issuer of Google's push OIDC tokens.
GOOGLE_ISSUER = "https://accounts.google.com"
#: Lifetime of a push OIDC token, in seconds.
PUSH_TOKEN_LIFETIME_S = 3600


@dataclass
class PushSettings:
    """Where Gmail pushes go and how their OIDC token looks (changeable at runtime)."""

    gmail_push_url: str | None
    gmail_push_audience: str | None
    service_account_email: str

    def as_json(self) -> dict[str, object]:
        """The settings as the control API shows them."""
        return {
            "gmail_push_url": self.gmail_push_url,
            "gmail_push_audience": self.gmail_push_audience,
            "service_account_email": self.service_account_email,
        }


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
