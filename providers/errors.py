"""The providers' own error family; the task side maps it onto the safeguards' taxonomy."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: an idle worker does not load httpx (issue 12, goal 8)
    import httpx

from providers.retry_after import parse_retry_after

#: Longest provider message copied into an error, characters.
MAX_MESSAGE_CHARS = 300


class ProviderError(Exception):
    """Any failure of a provider call; ``status`` is the HTTP status when there was one."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        #: "gmail", "outlook" or "oauth".
        self.provider = provider
        #: The HTTP status of the answer; None for timeouts and connection errors.
        self.status = status
        #: The provider's machine-readable reason (Gmail ``errors[].reason``, Graph ``error.code``).
        self.code = code
        #: The answer's Retry-After in seconds, whatever its status (429, 503, a quota 403...);
        #: None when it gave none or an unusable one. Set by ``OAuthSession`` for every answer.
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        where = f"{self.provider} {self.status}" if self.status is not None else self.provider
        reason = f" [{self.code}]" if self.code else ""
        return f"{where}{reason}: {self.args[0]}"


class ProviderThrottled(ProviderError):
    """The provider asked us to slow down (Gmail 429 / quota 403, Graph 429)."""


class ProviderUnavailable(ProviderError):
    """A transient failure: 5xx, timeout or connection error; retry with backoff."""


class ProviderAuthError(ProviderError):
    """The grant is revoked or refused even after a refresh: the mailbox needs re-authorisation."""


class CursorExpired(ProviderError):
    """The stored cursor (historyId, deltaLink) is no longer valid: do a full sync."""


class ProviderRequestError(ProviderError):
    """A permanent refusal of this request (other 4xx, e.g. insufficient permissions)."""


class ProviderPayloadError(ProviderRequestError):
    """A provider answer we cannot read: a required field missing or of the wrong shape.

    Permanent, like any refusal of the request: the same answer fails the same way on every
    retry. Raised only by the adapters' parsing (``payload_errors``), so a KeyError elsewhere
    in our code is never mistaken for one.
    """


def request_error_status(exc: BaseException) -> int | None:
    """The HTTP status of the ProviderRequestError ``exc`` is, or was raised from; else None.

    A call guard may re-raise the adapter's error as its own failure type (``raise ... from``),
    so a caller that handles one status (a 404: gone) looks along the cause chain.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ProviderRequestError):
            return seen.status
        seen = seen.__cause__
    return None


@contextmanager
def payload_errors(provider: str, what: str) -> Iterator[None]:
    """Turn a KeyError/TypeError/ValueError/AttributeError/IndexError raised while parsing a
    provider's answer (``what``, e.g. "history.list") into a ProviderPayloadError.

    Wrap parsing only, never an HTTP request: the request's own errors keep their meaning.
    """
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        detail = f"{type(exc).__name__}: {exc}"[:MAX_MESSAGE_CHARS]
        raise ProviderPayloadError(
            f"{what}: unreadable answer ({detail})", provider=provider
        ) from exc


def error_body(response: httpx.Response) -> dict[str, Any]:
    """The JSON body of an error answer, or {} when it is not a JSON object."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def error_code(response: httpx.Response) -> str | None:
    """The machine-readable code: OAuth ``error``, Graph ``error.code``, Google ``error.status``."""
    error = error_body(response).get("error")
    if isinstance(error, str):
        return error
    if isinstance(error, dict):
        code = error.get("code")
        return code if isinstance(code, str) else error.get("status")
    return None


def error_message(response: httpx.Response) -> str:
    """The provider's human message, shortened; never the request (which carries the token)."""
    error = error_body(response).get("error")
    message = error.get("message") if isinstance(error, dict) else None
    text = message if isinstance(message, str) else response.reason_phrase or "error"
    return text[:MAX_MESSAGE_CHARS]


def retry_after_s(response: httpx.Response, now: float | None = None) -> float | None:
    """The answer's ``Retry-After`` in seconds from ``now`` (default: the epoch clock).

    None when absent or unusable; see ``providers.retry_after.parse_retry_after``.
    """
    return parse_retry_after(
        response.headers.get("Retry-After"), time.time() if now is None else now
    )
