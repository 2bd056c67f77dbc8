"""Microsoft Graph mail adapter over httpx: messages delta, subscriptions, Graph's errors mapped."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

import httpx

from providers.base import (
    CallGuard,
    ChangesPage,
    FullPage,
    RemoteMessage,
    Subscription,
    UnreadableItem,
    lenient,
    no_guard,
    optional_text,
    parse_datetime,
    required_id,
    resolve_costs,
    text_items,
    unreadable_item,
)
from providers.errors import (
    CursorExpired,
    ProviderError,
    ProviderPayloadError,
    ProviderRequestError,
    ProviderThrottled,
    ProviderUnavailable,
    error_code,
    error_message,
    payload_errors,
    request_error_status,
)
from providers.oauth import DEFAULT_TIMEOUT, OAuthCredentials, OAuthSession

PROVIDER = "outlook"
#: Microsoft Graph root.
GRAPH_BASE_URL = "https://graph.microsoft.com"
#: Microsoft identity platform token endpoint (multi-tenant).
MICROSOFT_TOKEN_URL = "https://login.microsoftonline.com/common/oauth2/v2.0/token"
#: Scope asked for on refresh.
GRAPH_SCOPE = "https://graph.microsoft.com/.default offline_access"
#: Graph throttles by request count: every call costs 1; keys are the call guard's names.
OUTLOOK_COSTS: Mapping[str, int] = MappingProxyType(
    {
        "delta": 1,
        "subscriptions.create": 1,
        "subscriptions.update": 1,
        "subscriptions.reauthorize": 1,
        "subscriptions.delete": 1,
    }
)
#: Graph error codes that mean "your delta token is dead: resync".
STALE_SYNC_CODES = frozenset({"syncstatenotfound", "syncstateinvalid", "resyncrequired"})
#: Fields asked of each message in delta.
SELECT_FIELDS = "subject,from,receivedDateTime,conversationId,categories,isRead,changeKey"
#: Longest clientState Graph accepts, characters.
MAX_CLIENT_STATE = 128


def classify(operation: str, response: httpx.Response) -> ProviderError:
    """Map a non-2xx Graph answer onto the providers' error family.

    Retry-After is not read here: ``OAuthSession`` puts it on whatever error this returns.
    """
    status, code = response.status_code, error_code(response)
    message = f"{operation}: {error_message(response)}"
    if status == 429:
        return ProviderThrottled(message, provider=PROVIDER, status=status, code=code)
    if status == 410 or (400 <= status < 500 and (code or "").lower() in STALE_SYNC_CODES):
        return CursorExpired(message, provider=PROVIDER, status=status, code=code)
    if status >= 500 or status == 408:
        return ProviderUnavailable(message, provider=PROVIDER, status=status, code=code)
    return ProviderRequestError(message, provider=PROVIDER, status=status, code=code)


def _sender(item: Mapping[str, Any]) -> Any:
    sender = item.get("from")
    email = sender.get("emailAddress") if isinstance(sender, Mapping) else None
    return email.get("address") if isinstance(email, Mapping) else None


def parse_message(item: Mapping[str, Any]) -> RemoteMessage:
    """A delta item as a RemoteMessage; categories are the labels, plus UNREAD as Gmail has it.

    Raises ProviderPayloadError without a usable ``id``; any other field Graph sends in a shape
    we cannot read is left empty and named in ``unreadable`` (one odd message must not fail
    its page).
    """
    message_id = required_id(item.get("id"), PROVIDER, "delta item")
    unreadable: list[str] = []
    labels = text_items(item.get("categories"), "labels", unreadable)
    if item.get("isRead") is False:
        labels += ("UNREAD",)
    thread_id = lenient(optional_text, item.get("conversationId"), "thread_id", unreadable)
    subject = lenient(optional_text, item.get("subject"), "subject", unreadable)
    sender = lenient(optional_text, _sender(item), "sender", unreadable)
    received = lenient(parse_datetime, item.get("receivedDateTime"), "received_at", unreadable)
    version = item.get("changeKey") or item.get("@odata.etag")
    return RemoteMessage(
        provider_message_id=message_id,
        thread_id=thread_id,
        labels=labels,
        subject=subject,
        sender=sender,
        received_at=received,
        size_bytes=None,
        version=lenient(optional_text, version, "provider_version", unreadable),
        unreadable=tuple(unreadable),
    )


def _subscription(body: Mapping[str, Any]) -> Subscription:
    with payload_errors(PROVIDER, "subscription"):
        expires_at = parse_datetime(body.get("expirationDateTime"))
        if expires_at is None:
            raise ProviderPayloadError("subscription lacks expirationDateTime", provider=PROVIDER)
        return Subscription(
            provider=PROVIDER,
            subscription_id=required_id(body.get("id"), PROVIDER, "subscription id"),
            resource=str(body.get("resource", "")),
            expires_at=expires_at,
        )


class OutlookClient:
    """One Outlook mail folder over Microsoft Graph; every request goes through ``call_guard``."""

    provider = PROVIDER

    def __init__(
        self,
        credentials: OAuthCredentials,
        *,
        user_id: str = "me",
        folder: str = "inbox",
        base_url: str = GRAPH_BASE_URL,
        token_url: str = MICROSOFT_TOKEN_URL,
        scope: str | None = GRAPH_SCOPE,
        call_guard: CallGuard = no_guard,
        on_refresh: Callable[[OAuthCredentials], None] | None = None,
        costs: Mapping[str, int] | None = None,
        page_size: int = 50,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
    ) -> None:
        if page_size < 1:
            raise ValueError(f"page_size must be positive, got {page_size}")
        self.costs = resolve_costs(OUTLOOK_COSTS, costs)
        self.page_size = page_size
        self.folder = folder
        self._base = base_url.rstrip("/")
        self._owner = "me" if user_id == "me" else f"users/{quote(user_id, safe='')}"
        self.resource = f"/{self._owner}/mailFolders('{folder}')/messages"
        self.session = OAuthSession(
            credentials,
            provider=PROVIDER,
            token_url=token_url,
            classify=classify,
            call_guard=call_guard,
            on_refresh=on_refresh,
            scope=scope,
            timeout=timeout,
        )

    def close(self) -> None:
        """Release the HTTP connections."""
        self.session.close()

    def _call(self, operation: str, method: str, url: str, **kwargs: Any) -> Any:
        response = self.session.request(operation, self.costs[operation], method, url, **kwargs)
        with payload_errors(PROVIDER, operation):  # a success whose body is not JSON
            return response.json() if response.content else {}

    def _follow(self, link: str) -> str:
        """A nextLink/deltaLink, refused unless it points at our Graph host (it gets our token)."""
        if not link.startswith(self._base + "/"):
            raise ProviderRequestError(
                "delta link points outside the configured Graph base URL", provider=PROVIDER
            )
        return link

    def _delta(self, url: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        headers = {"Prefer": f"odata.maxpagesize={self.page_size}"}
        body: dict[str, Any] = self._call("delta", "GET", url, params=params, headers=headers)
        return body

    def initial_delta_url(self) -> str:
        """Where a full delta round starts."""
        folder = quote(self.folder, safe="")
        return f"{self._base}/v1.0/{self._owner}/mailFolders/{folder}/messages/delta"

    def list_page(self, page_token: str | None = None) -> FullPage:
        """One page of the initial delta round (spends ``delta``); the last page sets the cursor."""
        if page_token is None:
            body = self._delta(self.initial_delta_url(), {"$select": SELECT_FIELDS})
        else:
            body = self._delta(self._follow(page_token))
        changes = self._page(body)
        return FullPage(
            changes.upserts, changes.next_page_token, changes.cursor, changes.unreadable
        )

    def changes_page(self, cursor: str, page_token: str | None = None) -> ChangesPage:
        """One page of delta from the stored deltaLink, or the nextLink ``page_token``."""
        return self._page(self._delta(self._follow(page_token or cursor)))

    def _page(self, body: Mapping[str, Any]) -> ChangesPage:
        """Fold one delta page: the last word about each id wins (Graph may repeat a change)."""
        latest: dict[str, RemoteMessage | None] = {}
        unreadable: list[UnreadableItem] = []
        with payload_errors(PROVIDER, "delta"):
            for item in body.get("value") or []:
                try:  # one unreadable item is set aside; the rest of its page goes on
                    with payload_errors(PROVIDER, "delta item"):
                        message_id = required_id(item.get("id"), PROVIDER, "delta item")
                        change = None if "@removed" in item else parse_message(item)
                except ProviderPayloadError as exc:
                    unreadable.append(unreadable_item(item, type(exc).__name__, str(exc)))
                    continue
                latest.pop(message_id, None)  # re-insert so order follows the last change
                latest[message_id] = change
            next_link = optional_text(body.get("@odata.nextLink"))
            delta_link = optional_text(body.get("@odata.deltaLink"))
        if not next_link and not delta_link:
            raise ProviderRequestError(
                "delta page has neither nextLink nor deltaLink", provider=PROVIDER
            )
        return ChangesPage(
            upserts=[m for m in latest.values() if m is not None],
            deleted_ids=[i for i, m in latest.items() if m is None],
            next_page_token=next_link,
            cursor=None if next_link else delta_link,
            unreadable=unreadable,
        )

    def create_subscription(
        self,
        notification_url: str,
        lifecycle_url: str,
        client_state: str,
        expiration: datetime,
        change_type: str = "created,updated,deleted",
    ) -> Subscription:
        """Subscribe to the folder's messages (spends ``subscriptions.create``)."""
        if len(client_state) > MAX_CLIENT_STATE:
            raise ValueError(f"client_state is longer than {MAX_CLIENT_STATE} characters")
        request = {
            "changeType": change_type,
            "notificationUrl": notification_url,
            "lifecycleNotificationUrl": lifecycle_url,
            "resource": self.resource,
            "expirationDateTime": _iso(expiration),
            "clientState": client_state,
        }
        url = f"{self._base}/v1.0/subscriptions"
        return _subscription(self._call("subscriptions.create", "POST", url, json=request))

    def renew_subscription(self, subscription_id: str, expiration: datetime) -> Subscription:
        """Extend a subscription to Graph's returned expiry (spends ``subscriptions.update``)."""
        url = f"{self._base}/v1.0/subscriptions/{quote(subscription_id, safe='')}"
        body = {"expirationDateTime": _iso(expiration)}
        return _subscription(self._call("subscriptions.update", "PATCH", url, json=body))

    def reauthorize_subscription(self, subscription_id: str) -> None:
        """Answer a reauthorizationRequired event (spends ``subscriptions.reauthorize``)."""
        sid = quote(subscription_id, safe="")
        url = f"{self._base}/v1.0/subscriptions/{sid}/reauthorize"
        self._call("subscriptions.reauthorize", "POST", url)

    def delete_subscription(self, subscription_id: str) -> None:
        """Delete a subscription; one already gone counts as deleted (``subscriptions.delete``)."""
        url = f"{self._base}/v1.0/subscriptions/{quote(subscription_id, safe='')}"
        try:
            self._call("subscriptions.delete", "DELETE", url)
        except Exception as exc:  # the call guard may re-raise it as its own failure type
            if request_error_status(exc) != 404:
                raise


def _iso(moment: datetime) -> str:
    """A datetime as Graph wants it: UTC with a Z."""
    if moment.tzinfo is None:
        raise ValueError("expiration must be timezone-aware")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
