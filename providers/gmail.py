"""Gmail API adapter over httpx: full listing, history, watch/stop; every call through the
call guard. Gmail's answers (errors, message and history payloads) are read in
``providers.gmail_answers``; the batch wire format is ``providers.gmail_batch``."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from providers import gmail_batch
from providers.base import (
    CallGuard,
    ChangesPage,
    FullPage,
    RemoteMessage,
    Subscription,
    UnreadableItem,
    no_guard,
    optional_text,
    required_id,
    resolve_costs,
)
from providers.errors import ProviderPayloadError, payload_errors, request_error_status
from providers.gmail_answers import PROVIDER, classify, parse_message, read_history, ref_id
from providers.oauth import DEFAULT_TIMEOUT, OAuthCredentials, OAuthSession

# classify and parse_message are read from here too (providers.gmail is the adapter's face).
__all__ = ["GMAIL_COSTS", "PROVIDER", "GmailClient", "classify", "parse_message"]

#: Gmail API root.
GMAIL_BASE_URL = "https://gmail.googleapis.com"
#: Google's OAuth token endpoint.
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
#: Quota units per operation (Gmail usage limits, new-project table); each key is the name the
#: call guard receives. ``getProfile`` is ``users.getProfile``.
GMAIL_COSTS: Mapping[str, int] = MappingProxyType(
    {
        "messages.list": 5,
        "messages.get": 20,
        "history.list": 2,
        "watch": 100,
        "stop": 50,
        "getProfile": 1,
    }
)
#: Largest page Gmail serves for messages.list and history.list.
MAX_PAGE_SIZE = 500
#: History record types fetched by default.
HISTORY_TYPES = ("messageAdded", "messageDeleted", "labelAdded", "labelRemoved")
#: ``messages.get`` statuses about the one message, not the call: gone since it was listed
#: (skipped, as a deletion), or refused on its own, e.g. an id Gmail calls invalid (set aside).
#: 401/403/429/5xx concern the mailbox or the provider and fail the whole page as before.
GONE_STATUSES = frozenset({404, 410})
BAD_ITEM_STATUSES = frozenset({400})
#: Inner answers of a batch read per message (success, gone, refused); others fail the batch.
ITEM_STATUSES = frozenset(range(200, 300)) | GONE_STATUSES | BAD_ITEM_STATUSES


class GmailClient:
    """One Gmail mailbox over the REST API; every request goes through ``call_guard``."""

    provider = PROVIDER

    def __init__(
        self,
        credentials: OAuthCredentials,
        *,
        user_id: str = "me",
        base_url: str = GMAIL_BASE_URL,
        token_url: str = GOOGLE_TOKEN_URL,
        call_guard: CallGuard = no_guard,
        on_refresh: Callable[[OAuthCredentials], None] | None = None,
        costs: Mapping[str, int] | None = None,
        page_size: int = 100,
        label_ids: Sequence[str] = (),
        query: str | None = None,
        history_types: Sequence[str] = HISTORY_TYPES,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        batch_size: int = gmail_batch.RECOMMENDED_CALLS,
    ) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}, got {page_size}")
        if not 1 <= batch_size <= gmail_batch.MAX_CALLS:
            raise ValueError(f"batch_size must be 1..{gmail_batch.MAX_CALLS}, got {batch_size}")
        #: messages.get calls per batch request (``get_messages``).
        self.batch_size = batch_size
        self.costs = resolve_costs(GMAIL_COSTS, costs)
        self.page_size = page_size
        self.label_ids = tuple(label_ids)
        self.query = query
        self.history_types = tuple(history_types)
        self._root = f"{base_url.rstrip('/')}/gmail/v1/users/{quote(user_id, safe='')}"
        # Inner calls of a batch name their path from the host on (Google's batch guide).
        self._inner_root = urlsplit(self._root).path
        self._batch_url = f"{base_url.rstrip('/')}{gmail_batch.BATCH_PATH}"
        self.session = OAuthSession(
            credentials,
            provider=PROVIDER,
            token_url=token_url,
            classify=classify,
            call_guard=call_guard,
            on_refresh=on_refresh,
            timeout=timeout,
        )

    def close(self) -> None:
        """Release the HTTP connections."""
        self.session.close()

    def _call(self, operation: str, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self._root}/{path}"
        response = self.session.request(operation, self.costs[operation], method, url, **kwargs)
        with payload_errors(PROVIDER, operation):  # a success whose body is not JSON
            return response.json() if response.content else {}

    def current_cursor(self) -> str:
        """The mailbox's current historyId (spends ``getProfile``)."""
        body = self._call("getProfile", "GET", "profile")
        with payload_errors(PROVIDER, "getProfile"):
            return required_id(body["historyId"], PROVIDER, "getProfile historyId")

    def get_message(self, message_id: str) -> RemoteMessage | UnreadableItem | None:
        """One message's metadata (spends ``messages.get``): None when it is gone, an
        UnreadableItem when Gmail refuses this one message or serves it unreadable (see
        ``BAD_ITEM_STATUSES``); other failures raise ProviderError."""
        params = [
            ("format", "metadata"),
            ("metadataHeaders", "Subject"),
            ("metadataHeaders", "From"),
        ]
        try:
            body = self._call(
                "messages.get", "GET", f"messages/{quote(message_id, safe='')}", params=params
            )
        except ProviderPayloadError as exc:  # a success whose body is not JSON
            return UnreadableItem(message_id, type(exc).__name__, str(exc))
        except Exception as exc:  # the call guard may re-raise it as its own failure type
            status = request_error_status(exc)
            if status in GONE_STATUSES:  # deleted since it was listed: not an error
                return None
            if status in BAD_ITEM_STATUSES:  # this message only: its page goes on
                return UnreadableItem(message_id, f"ProviderRequestError {status}", str(exc))
            raise
        try:
            with payload_errors(PROVIDER, "messages.get"):
                return parse_message(body)
        except ProviderPayloadError as exc:
            return UnreadableItem(message_id, type(exc).__name__, str(exc))

    def get_messages(
        self, message_ids: Sequence[str]
    ) -> list[RemoteMessage | UnreadableItem | None]:
        """What ``get_message`` gives for each id, in order, fetched through Gmail's batch
        endpoint ``batch_size`` calls a request (``providers.gmail_batch``).

        Each inner call spends ``messages.get``: the guard is entered once per batch with their
        summed cost. A 429, quota 403, 5xx (or any status other than a gone or refused message)
        of one inner call raises that call's typed error with its Retry-After, inside the guard,
        exactly as the same answer to a plain call does; the page is then retried whole.
        """
        fetched: list[RemoteMessage | UnreadableItem | None] = []
        for first in range(0, len(message_ids), self.batch_size):
            fetched += self._batch(message_ids[first : first + self.batch_size])
        return fetched

    def _batch(self, message_ids: Sequence[str]) -> list[RemoteMessage | UnreadableItem | None]:
        query = "format=metadata&metadataHeaders=Subject&metadataHeaders=From"
        calls = {
            str(n): f"{self._inner_root}/messages/{quote(message_id, safe='')}?{query}"
            for n, message_id in enumerate(message_ids)
        }
        kind, body = gmail_batch.encode(calls)
        answers: dict[str, gmail_batch.Answer] = {}

        def check(response: httpx.Response) -> None:
            try:
                answers.update(gmail_batch.decode(response))
            except gmail_batch.BatchError as exc:
                raise ProviderPayloadError(f"messages.get batch: {exc}", provider=PROVIDER) from exc
            if missing := set(calls) - set(answers):
                raise ProviderPayloadError(
                    f"messages.get batch: no answer to {len(missing)} calls", provider=PROVIDER
                )
            failed = [a for a in answers.values() if a.status not in ITEM_STATUSES]
            if failed:  # a throttle first: its Retry-After is the one worth obeying
                failed.sort(key=lambda a: a.status not in (429, 403))
                raise self.session.error_of("messages.get", failed[0].response())

        cost = self.costs["messages.get"] * len(message_ids)
        headers = {"Content-Type": kind}
        self.session.request(
            "messages.get",
            cost,
            "POST",
            self._batch_url,
            content=body,
            headers=headers,
            check=check,
        )
        return [self._item(i, answers[str(n)]) for n, i in enumerate(message_ids)]

    def _item(
        self, message_id: str, answer: gmail_batch.Answer
    ) -> RemoteMessage | UnreadableItem | None:
        """One inner answer, read as ``get_message`` reads a plain one."""
        if answer.status in GONE_STATUSES:
            return None
        if answer.status in BAD_ITEM_STATUSES:
            error = self.session.error_of("messages.get", answer.response())
            return UnreadableItem(message_id, f"ProviderRequestError {answer.status}", str(error))
        try:
            with payload_errors(PROVIDER, "messages.get"):
                return parse_message(json.loads(answer.body))
        except ProviderPayloadError as exc:
            return UnreadableItem(message_id, type(exc).__name__, str(exc))

    def list_page(self, page_token: str | None = None) -> FullPage:
        """One page of ``messages.list`` plus a ``messages.get`` per id (first page: getProfile)."""
        # The historyId is read before the first page and carried inside the opaque page token,
        # so the final page's cursor covers every change made while the listing ran.
        if page_token is None:
            start, gmail_token = self.current_cursor(), ""
        else:
            start, _, gmail_token = page_token.partition(":")
        params: list[tuple[str, Any]] = [("maxResults", self.page_size)]
        params += [("labelIds", label) for label in self.label_ids]
        if gmail_token:
            params.append(("pageToken", gmail_token))
        if self.query:
            params.append(("q", self.query))
        body = self._call("messages.list", "GET", "messages", params=params)
        unreadable: list[UnreadableItem] = []
        with payload_errors(PROVIDER, "messages.list"):
            refs = [ref_id(ref, unreadable) for ref in body.get("messages") or []]
            next_token = optional_text(body.get("nextPageToken"))
        messages: list[RemoteMessage] = []
        for fetched in self.get_messages([i for i in refs if i is not None]):
            if isinstance(fetched, UnreadableItem):
                unreadable.append(fetched)
            elif fetched is not None:
                messages.append(fetched)
        if next_token:
            token = f"{start}:{next_token}"
            return FullPage(messages, next_page_token=token, cursor=None, unreadable=unreadable)
        return FullPage(messages, next_page_token=None, cursor=start, unreadable=unreadable)

    def changes_page(self, cursor: str, page_token: str | None = None) -> ChangesPage:
        """A page of ``history.list`` since ``cursor``; each added message costs a messages.get."""
        params: list[tuple[str, Any]] = [("startHistoryId", cursor), ("maxResults", self.page_size)]
        params += [("historyTypes", kind) for kind in self.history_types]
        if page_token:
            params.append(("pageToken", page_token))
        body = self._call("history.list", "GET", "history", params=params)
        history = read_history(body)
        deleted, unreadable = history.deleted, history.unreadable
        upserts: list[RemoteMessage] = []
        added = list(history.added)
        for message_id, message in zip(added, self.get_messages(added), strict=True):
            if message is None:
                deleted[message_id] = None
            elif isinstance(message, UnreadableItem):
                unreadable.append(message)
            else:
                upserts.append(message)
        fetched = set(added) | set(deleted)
        label_changes = [c for c in history.label_changes if c.provider_message_id not in fetched]
        return ChangesPage(
            upserts=upserts,
            deleted_ids=list(deleted),
            label_changes=label_changes,
            next_page_token=history.next_page_token,
            cursor=history.cursor,
            unreadable=unreadable,
        )

    def watch(
        self,
        topic_name: str,
        label_ids: Sequence[str] = (),
        label_filter_behavior: str = "INCLUDE",
    ) -> Subscription:
        """Start or renew push notifications to ``topic_name`` (spends ``watch``)."""
        request: dict[str, Any] = {"topicName": topic_name}
        if label_ids:
            request["labelIds"] = list(label_ids)
            request["labelFilterBehavior"] = label_filter_behavior
        body = self._call("watch", "POST", "watch", json=request)
        with payload_errors(PROVIDER, "watch"):
            return Subscription(
                provider=PROVIDER,
                subscription_id=None,
                resource=topic_name,
                expires_at=datetime.fromtimestamp(int(body["expiration"]) / 1000, tz=UTC),
                history_id=required_id(body["historyId"], PROVIDER, "watch historyId"),
            )

    def stop(self) -> None:
        """Stop push notifications for the mailbox (spends ``stop``)."""
        self._call("stop", "POST", "stop")
