"""Every API call's entry: bearer-token auth, request counting and injected faults."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import Request
from fastapi.responses import JSONResponse

from providers.emulator.context import context
from providers.emulator.faults import RequestFault, take_request_fault
from providers.emulator.state import Mailbox, Provider

Api = Literal["gmail", "graph"]

_GMAIL_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_GRAPH_CODE = {
    400: "BadRequest",
    401: "InvalidAuthenticationToken",
    403: "ErrorAccessDenied",
    404: "ResourceNotFound",
    429: "TooManyRequests",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceNotAvailable",
    504: "GatewayTimeout",
}


class ApiError(Exception):
    """An error answer in the provider's own shape."""

    def __init__(self, status: int, body: dict[str, object], headers: dict[str, str]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers

    def response(self) -> JSONResponse:
        """The error as an HTTP response."""
        return JSONResponse(self.body, status_code=self.status, headers=self.headers)


def gmail_error(
    status: int, message: str, reason: str, headers: dict[str, str] | None = None
) -> ApiError:
    """A Google API error: {"error": {code, message, errors[], status}}."""
    detail = {"message": message, "domain": "global", "reason": reason}
    body: dict[str, object] = {
        "error": {
            "code": status,
            "message": message,
            "errors": [detail],
            "status": _GMAIL_STATUS.get(status, "UNKNOWN"),
        }
    }
    return ApiError(status, body, headers or {})


def graph_error(
    status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None
) -> ApiError:
    """A Graph error: {"error": {code, message}}."""
    body: dict[str, object] = {
        "error": {
            "code": code or _GRAPH_CODE.get(status, "UnknownError"),
            "message": message,
            "innerError": {"request-id": "emulator"},
        }
    }
    return ApiError(status, body, headers or {})


def api_error(
    api: Api, status: int, message: str, reason: str, headers: dict[str, str] | None = None
) -> ApiError:
    """An error in the shape of the given API (reason is Gmail's reason or Graph's code)."""
    if api == "gmail":
        return gmail_error(status, message, reason, headers)
    return graph_error(status, message, reason if reason[0].isupper() else None, headers)


def authenticate(request: Request, api: Api) -> Mailbox:
    """The mailbox of the request's bearer token, or a 401."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    box = context(request).state.mailbox_for_token(token) if scheme.lower() == "bearer" else None
    if box is not None and (box.provider is Provider.GMAIL) != (api == "gmail"):
        box = None  # a Gmail grant is no Graph token, and the other way round
    if box is None:
        if api == "gmail":
            raise gmail_error(401, "Request had invalid authentication credentials.", "authError")
        raise graph_error(401, "Access token is empty, invalid, expired or revoked.")
    return box


async def enter(request: Request, endpoint: str, api: Api, user_id: str) -> Mailbox:
    """Authenticate, count, and apply the mailbox's faults before an API call."""
    ctx = context(request)
    box = authenticate(request, api)
    request.state.stat = (box.address, endpoint)
    with ctx.state.lock:
        box.stats.requests[endpoint] += 1
        fault = take_request_fault(box.faults, ctx.config.timeout_fault_s)
    await apply_fault(api, fault)
    if user_id not in ("me", box.address):
        raise api_error(api, 403, "Delegation denied for " + box.address, "forbidden")
    return box


async def apply_fault(api: Api, fault: RequestFault) -> None:
    """Delay, then raise the ApiError of a failing fault (a batch applies it to each part)."""
    if fault.slow_ms:
        await asyncio.sleep(fault.slow_ms / 1000)
    if fault.timeout_s is not None:
        await asyncio.sleep(fault.timeout_s)
        raise api_error(api, 504, "Deadline exceeded.", "deadlineExceeded")
    headers = fault.headers()
    if fault.throttled:
        if api == "gmail":
            raise gmail_error(
                429, "Too many concurrent requests for user", "rateLimitExceeded", headers
            )
        raise graph_error(
            429, "Application is over its MailboxConcurrency limit.", "TooManyRequests", headers
        )
    if fault.quota_reason is not None:
        message = {
            "userRateLimitExceeded": "User-rate limit exceeded.",
            "rateLimitExceeded": "Rate Limit Exceeded",
            "dailyLimitExceeded": "Daily Limit Exceeded",
        }.get(fault.quota_reason, "Request had insufficient authentication scopes.")
        raise api_error(api, 403, message, fault.quota_reason, headers)
    if fault.server_status is not None:
        raise api_error(api, fault.server_status, "Backend Error", "backendError", headers)
