"""Provider adapters for a store: decrypted credentials in, guarded calls, errors mapped out."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from sqlalchemy import update

from models import Provider, Store
from providers.base import CallGuard, MailProvider
from providers.errors import (
    CursorExpired,
    ProviderAuthError,
    ProviderError,
    ProviderRequestError,
    ProviderThrottled,
)
from safeguards.errors import (
    AuthenticationFailure,
    CallFailure,
    CursorLost,
    ThrottledFailure,
    TransientFailure,
    ValidationFailure,
)
from syncguard.crypto import decrypt_json, encrypt_json
from syncguard.db import service_session
from syncguard.settings import get_settings

if TYPE_CHECKING:
    from providers.oauth import OAuthCredentials


def to_call_failure(exc: BaseException) -> CallFailure | None:
    """Map a provider's typed error onto the safeguards' taxonomy (None: not a provider error).

    The provider's Retry-After travels on every kind: the guard throttles the store's limiter
    for it, and ``SafeguardedTask`` waits at least that long (see its ``_retry_countdown``).
    """
    if not isinstance(exc, ProviderError):
        return None
    message = f"{exc.provider}: {exc}"
    kind: type[CallFailure] = TransientFailure
    if isinstance(exc, ProviderThrottled):
        kind = ThrottledFailure
    elif isinstance(exc, ProviderAuthError):
        kind = AuthenticationFailure
    elif isinstance(exc, CursorExpired):
        kind = CursorLost
    elif isinstance(exc, ProviderRequestError):
        kind = ValidationFailure
    return kind(message, exc.retry_after_s)


def store_credentials(store: Store) -> OAuthCredentials:
    """The store's decrypted OAuth credentials (kept in memory only, never in task arguments)."""
    if store.credentials_encrypted is None:
        raise AuthenticationFailure(f"store {store.id} has no credentials: connect it first")
    from providers.oauth import OAuthCredentials  # see open_client

    return OAuthCredentials.from_dict(decrypt_json(store.credentials_encrypted))


def save_credentials(store_id: uuid.UUID, credentials: OAuthCredentials) -> None:
    """Encrypt and store ``credentials`` (after a token refresh, or when connecting a store)."""
    with service_session() as session:
        session.execute(
            update(Store)
            .where(Store.id == store_id)
            .values(credentials_encrypted=encrypt_json(credentials.to_dict()))
        )


def open_client(store: Store, call_guard: CallGuard) -> MailProvider:
    """A real HTTP client of the store's mailbox whose every request passes ``call_guard``."""
    # The adapters load httpx (~6.5 MB with its CLI's rich and pygments): imported when a task
    # opens one, so an idle worker does not carry them (issue 12, goal 8).
    from providers.gmail import GmailClient
    from providers.outlook import OutlookClient

    settings = get_settings()
    credentials = store_credentials(store)
    store_id = store.id

    def on_refresh(fresh: OAuthCredentials) -> None:
        save_credentials(store_id, fresh)

    if store.provider is Provider.GMAIL:
        return GmailClient(
            credentials,
            base_url=settings.gmail_api_url,
            token_url=settings.gmail_token_url,
            call_guard=call_guard,
            on_refresh=on_refresh,
            page_size=settings.sync_page_size,
        )
    return OutlookClient(
        credentials,
        base_url=settings.graph_api_url,
        token_url=settings.graph_token_url,
        call_guard=call_guard,
        on_refresh=on_refresh,
        page_size=settings.sync_page_size,
    )
