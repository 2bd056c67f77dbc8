"""Plain HTTP adapters for Gmail and Microsoft Graph: no database, no Celery, own typed errors.

Exports the protocol and results (``providers.base``), the error family (``providers.errors``)
and the credentials (``providers.oauth``); import the adapters from ``providers.gmail`` and
``providers.outlook``. ``providers.emulator`` is a test double that product code never imports.
"""

from typing import TYPE_CHECKING, Any

from providers.base import (
    CallGuard,
    ChangesPage,
    FullPage,
    LabelChange,
    MailProvider,
    RemoteMessage,
    Subscription,
    no_guard,
)
from providers.errors import (
    CursorExpired,
    ProviderAuthError,
    ProviderError,
    ProviderRequestError,
    ProviderThrottled,
    ProviderUnavailable,
)

if TYPE_CHECKING:
    from providers.oauth import OAuthCredentials

__all__ = [
    "CallGuard",
    "ChangesPage",
    "CursorExpired",
    "FullPage",
    "LabelChange",
    "MailProvider",
    "OAuthCredentials",
    "ProviderAuthError",
    "ProviderError",
    "ProviderRequestError",
    "ProviderThrottled",
    "ProviderUnavailable",
    "RemoteMessage",
    "Subscription",
    "no_guard",
]


def __getattr__(name: str) -> Any:
    """``OAuthCredentials`` on first use: ``providers.oauth`` loads httpx, which a process that
    only reads ``providers.base`` (an idle worker) need not carry (issue 12, goal 8)."""
    if name == "OAuthCredentials":
        from providers.oauth import OAuthCredentials

        return OAuthCredentials
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
