"""OAuth credentials, refresh-token grants, and the bearer-authorised session the adapters share."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from providers.base import TOKEN_REFRESH, CallGuard, no_guard, parse_datetime
from providers.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderRequestError,
    ProviderThrottled,
    ProviderUnavailable,
    error_code,
    retry_after_s,
)

#: Refresh this long before the access token's stated expiry, seconds.
EXPIRY_SKEW_S = 60.0
#: Default HTTP timeouts, seconds: 5 to connect, 30 for each read/write.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
#: Token-endpoint error codes that mean the grant itself is dead (re-authorise).
DEAD_GRANT_CODES = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})

#: Maps a non-2xx answer of ``operation`` onto the provider's error family.
Classifier = Callable[[str, httpx.Response], ProviderError]


@dataclass(frozen=True)
class OAuthCredentials:
    """A mailbox's OAuth grant; ``repr`` redacts every secret."""

    client_id: str
    client_secret: str
    refresh_token: str
    access_token: str | None = None
    expires_at: datetime | None = None
    #: Microsoft Entra tenant of the mailbox (not secret): with ``client_id`` it names the Graph
    #: app quota the mailbox spends (per app per tenant); None for Gmail or an unknown tenant.
    tenant_id: str | None = None

    def __repr__(self) -> str:
        access = "None" if self.access_token is None else "'***'"
        return (
            f"OAuthCredentials(client_id={self.client_id!r}, client_secret='***', "
            f"refresh_token='***', access_token={access}, expires_at={self.expires_at!r}, "
            f"tenant_id={self.tenant_id!r})"
        )

    __str__ = __repr__

    def needs_refresh(self, now: datetime, skew_s: float = EXPIRY_SKEW_S) -> bool:
        """True without an access token or when it expires within ``skew_s`` of ``now``."""
        if self.access_token is None:
            return True
        return self.expires_at is not None and self.expires_at - timedelta(seconds=skew_s) <= now

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for encryption at rest, never for logs)."""
        data = dataclasses.asdict(self)
        data["expires_at"] = self.expires_at.isoformat() if self.expires_at else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OAuthCredentials:
        """The inverse of :meth:`to_dict`."""
        return cls(
            client_id=data["client_id"],
            client_secret=data["client_secret"],
            refresh_token=data["refresh_token"],
            access_token=data.get("access_token"),
            expires_at=parse_datetime(data.get("expires_at")),
            tenant_id=data.get("tenant_id"),
        )


def _token_error(response: httpx.Response) -> ProviderError:
    """Map a failed token-endpoint answer; ``invalid_grant`` means re-authorise."""
    code = error_code(response)
    status = response.status_code
    if code in DEAD_GRANT_CODES or status == 401:
        msg = "refresh token refused by the token endpoint; re-authorise the mailbox"
        return ProviderAuthError(msg, provider="oauth", status=status, code=code)
    if status == 429:
        return ProviderThrottled("token endpoint throttled", provider="oauth", status=status)
    if status >= 500:
        return ProviderUnavailable(
            "token endpoint failed", provider="oauth", status=status, code=code
        )
    return ProviderRequestError("token request refused", provider="oauth", status=status, code=code)


class OAuthSession:
    """An httpx client that sends a bearer token, refreshes it, and guards every request."""

    def __init__(
        self,
        credentials: OAuthCredentials,
        *,
        provider: str,
        token_url: str,
        classify: Classifier,
        call_guard: CallGuard = no_guard,
        on_refresh: Callable[[OAuthCredentials], None] | None = None,
        scope: str | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        skew_s: float = EXPIRY_SKEW_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.provider = provider
        self.token_url = token_url
        self._credentials = credentials
        self._classify = classify
        self._guard = call_guard
        self._on_refresh = on_refresh
        self._scope = scope
        self._skew_s = skew_s
        self._clock = clock
        self._client = httpx.Client(timeout=timeout, follow_redirects=False)

    @property
    def credentials(self) -> OAuthCredentials:
        """The current credentials (with the latest access token)."""
        return self._credentials

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def refresh(self) -> OAuthCredentials:
        """Run the refresh-token grant, store the new token and tell ``on_refresh``."""
        creds = self._credentials
        form = {
            "grant_type": "refresh_token",
            "refresh_token": creds.refresh_token,
            "client_id": creds.client_id,
            "client_secret": creds.client_secret,
        }
        if self._scope:
            form["scope"] = self._scope
        response = self._send(TOKEN_REFRESH, 0, "POST", self.token_url, False, data=form)
        body = response.json()
        expires_in = body.get("expires_in")
        self._credentials = dataclasses.replace(
            creds,
            access_token=body["access_token"],
            # Microsoft may rotate the refresh token; Google keeps the old one.
            refresh_token=body.get("refresh_token") or creds.refresh_token,
            expires_at=self._clock() + timedelta(seconds=float(expires_in)) if expires_in else None,
        )
        if self._on_refresh is not None:
            self._on_refresh(self._credentials)
        return self._credentials

    def request(
        self,
        operation: str,
        cost: int,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        check: Callable[[httpx.Response], None] | None = None,
    ) -> httpx.Response:
        """One authorised call; a 401 refreshes once and retries; non-2xx raises ProviderError.

        ``check`` runs on a 2xx answer inside the guard and may raise a ProviderError for it
        (a batch whose inner call failed), so the guard records that failure like any other.
        """
        if self._credentials.needs_refresh(self._clock(), self._skew_s):
            self.refresh()
        kwargs: dict[str, Any] = {
            "params": params,
            "json": json,
            "headers": headers,
            "content": content,
            "check": check,
        }
        response = self._authorised(operation, cost, method, url, True, kwargs)
        if response.status_code == 401:
            self.refresh()
            response = self._authorised(operation, cost, method, url, False, kwargs)
        return response

    def _authorised(
        self,
        operation: str,
        cost: int,
        method: str,
        url: str,
        tolerate_401: bool,
        kwargs: dict[str, Any],
    ) -> httpx.Response:
        token = self._credentials.access_token
        headers = {**(kwargs["headers"] or {}), "Authorization": f"Bearer {token}"}
        return self._send(
            operation,
            cost,
            method,
            url,
            tolerate_401,
            params=kwargs["params"],
            json=kwargs["json"],
            content=kwargs["content"],
            check=kwargs["check"],
            headers=headers,
        )

    def _send(
        self,
        operation: str,
        cost: int,
        method: str,
        url: str,
        tolerate_401: bool,
        check: Callable[[httpx.Response], None] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send inside the guard, so it sees every request and every failure as it happens."""
        with self._guard(operation, cost):
            try:
                response = self._client.request(method, url, **kwargs)
            except httpx.TimeoutException as exc:
                raise ProviderUnavailable(
                    f"{operation} timed out ({type(exc).__name__})", provider=self.provider
                ) from exc
            except httpx.TransportError as exc:
                raise ProviderUnavailable(
                    f"{operation} failed in transport ({type(exc).__name__})",
                    provider=self.provider,
                ) from exc
            if response.is_success and check is not None:
                check(response)
            if response.is_success or (tolerate_401 and response.status_code == 401):
                return response
            raise self._error(operation, response)

    def error_of(self, operation: str, response: httpx.Response) -> ProviderError:
        """The typed error of a failed answer (an inner answer of a batch, say), Retry-After set."""
        return self._error(operation, response)

    def _error(self, operation: str, response: httpx.Response) -> ProviderError:
        """The typed error of a failed answer, with its Retry-After parsed here, once.

        Every status may carry one (429, a quota 403, a 503 or 504 of the API or of the token
        endpoint: Microsoft Graph throttling guidance, Google's "exponential backoff" page), so
        it is read for all of them rather than by each classifier for the statuses it expects.
        """
        error = self._typed_error(operation, response)
        error.retry_after_s = retry_after_s(response, self._clock().timestamp())
        return error

    def _typed_error(self, operation: str, response: httpx.Response) -> ProviderError:
        if operation == TOKEN_REFRESH:
            return _token_error(response)
        if response.status_code == 401:
            return ProviderAuthError(
                "access refused after a token refresh; re-authorise the mailbox",
                provider=self.provider,
                status=401,
                code=error_code(response),
            )
        return self._classify(operation, response)
