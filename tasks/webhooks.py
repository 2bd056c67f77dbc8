"""Push subscriptions: create, renew, reauthorize and recreate them; Beat keeps them alive.

Gmail has one watch per mailbox (watching again renews it); Graph has subscriptions with ids,
renewed by PATCH. Every task takes ids only and re-reads its row. A renewal that fails is counted
on the row before the base class retries, defers or archives it. Notifications are only a hint:
``tasks.sync.reconcile`` syncs every active store periodically, so a dropped one never loses mail.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from models import (
    FailureCategory,
    MetricType,
    Store,
    SubscriptionStatus,
    SyncTrigger,
)
from providers.base import Subscription
from providers.errors import ProviderRequestError
from safeguards.errors import CallFailure, Refused, ValidationFailure
from safeguards.health_metrics.recorder import record_metric
from syncguard.db import service_session
from syncguard.settings import get_settings
from tasks import app
from tasks.base import SafeguardedTask
from tasks.guard import default_classifier
from tasks.provider_clients import open_client, to_call_failure
from tasks.subscriptions import (
    client_state_hash,
    current_health,
    load_subscription,
    record_renewal,
    record_renewal_failure,
    save_created,
    set_status,
    subscription_store,
)

if TYPE_CHECKING:  # annotations; see _client for the runtime imports
    from providers.gmail import GmailClient
    from providers.outlook import OutlookClient
from tasks.sync.jobs import StoreNotSyncable
from tasks.sync.requests import request_sync

log = logging.getLogger(__name__)

#: Characters of entropy source for a clientState (token_urlsafe gives ~1.3 chars per byte).
CLIENT_STATE_BYTES = 48
#: Name of the task argument holding a subscription id.
SUBSCRIPTION_ARG = "subscription_id"


class SubscriptionTask(SafeguardedTask):
    """SafeguardedTask whose store may come from a subscription id, speaking provider errors."""

    max_retries = 5

    def classify(self, exc: BaseException) -> CallFailure | None:
        """Provider errors first, then the generic rules."""
        return to_call_failure(exc) or default_classifier(exc)

    def store_id(self) -> uuid.UUID | None:
        """The store of the job: its ``store_id``, or the store of its subscription."""
        found = super().store_id()
        if found is None or self.store_arg != SUBSCRIPTION_ARG:
            return found
        return subscription_store(found)

    def subscription_id(self) -> uuid.UUID:
        """The subscription this job works on."""
        found = super().store_id()  # parses the argument named by store_arg
        if found is None or self.store_arg != SUBSCRIPTION_ARG:
            raise ValidationFailure(f"{self.name} has no subscription argument")
        return found

    def on_archived(
        self, entry_id: uuid.UUID, category: FailureCategory, exc: BaseException
    ) -> None:
        """A subscription whose renewal was given up on is failed: Beat stops renewing it."""
        if self.store_arg == SUBSCRIPTION_ARG:
            set_status(self.subscription_id(), SubscriptionStatus.FAILED)


def _client(task: SubscriptionTask, store: Store) -> GmailClient | OutlookClient:
    from providers.gmail import GmailClient
    from providers.outlook import OutlookClient

    client = open_client(store, lambda operation, cost: task.guard(operation, cost=cost))
    assert isinstance(client, GmailClient | OutlookClient)
    return client


def _load_store(store_id: uuid.UUID) -> Store:
    with service_session() as session:
        store = session.get(Store, store_id)
        if store is None:
            raise ValidationFailure(f"store {store_id} does not exist")
        return store


def _graph_expiration() -> datetime:
    minutes = get_settings().graph_subscription_lifetime_min
    return datetime.now(UTC) + timedelta(minutes=minutes)


def _create(task: SubscriptionTask, store: Store) -> tuple[uuid.UUID, Subscription]:
    """Open a new watch / subscription for ``store`` and make it the store's active row."""
    from providers.gmail import GmailClient
    from providers.outlook import OutlookClient

    settings = get_settings()
    client = _client(task, store)
    try:
        state_hash: str | None = None
        if isinstance(client, GmailClient):
            created = client.watch(settings.gmail_pubsub_topic)
        else:
            client_state = secrets.token_urlsafe(CLIENT_STATE_BYTES)
            state_hash = client_state_hash(client_state)
            base = settings.public_base_url.rstrip("/")
            created = client.create_subscription(
                f"{base}/webhooks/outlook",
                f"{base}/webhooks/outlook/lifecycle",
                client_state,
                _graph_expiration(),
            )
        new_id, replaced = save_created(store.id, created, state_hash)
        if isinstance(client, OutlookClient):
            for old in replaced:
                if old.provider_subscription_id not in (None, created.subscription_id):
                    _delete_quietly(client, old.provider_subscription_id or "")
    finally:
        client.close()
    return new_id, created


def _delete_quietly(client: OutlookClient, provider_subscription_id: str) -> None:
    """Delete a replaced Graph subscription; one left behind only sends rejected notifications."""
    try:
        client.delete_subscription(provider_subscription_id)
    except (CallFailure, Refused) as exc:
        record_metric(MetricType.WEBHOOKS, "subscription_delete_failed", 1.0)
        log.warning(
            "could not delete replaced Graph subscription %s: %s", provider_subscription_id, exc
        )


@app.task(bind=True, base=SubscriptionTask, name="tasks.webhooks.create_subscription")  # type: ignore[untyped-decorator]
def create_subscription(self: SubscriptionTask, store_id: str) -> dict[str, Any]:
    """Open the store's watch (Gmail) or subscription (Graph), replacing any live one."""
    store = _load_store(uuid.UUID(store_id))
    new_id, created = _create(self, store)
    return {"subscription_id": str(new_id), "expires_at": created.expires_at.isoformat()}


def _renew(task: SubscriptionTask, subscription_id: uuid.UUID, *, reauthorize: bool) -> Any:
    sub = load_subscription(subscription_id)
    if sub.status in (SubscriptionStatus.REMOVED, SubscriptionStatus.PENDING):
        return {"skipped": sub.status.value}
    from providers.gmail import GmailClient

    client = _client(task, _load_store(sub.store_id))
    try:
        if isinstance(client, GmailClient):
            expires_at: datetime | None = client.watch(get_settings().gmail_pubsub_topic).expires_at
        else:
            expires_at = _renew_graph(client, sub.provider_subscription_id or "", reauthorize)
    except ValidationFailure as exc:
        if _gone(exc):  # Graph forgot it (expired or removed): only a new one helps
            record_renewal_failure(subscription_id, exc)
            recreate_subscription.delay(str(subscription_id))
            return {"recreating": True}
        record_renewal_failure(subscription_id, exc)
        raise
    except Refused:
        raise  # nothing was called: not a renewal failure
    except Exception as exc:
        record_renewal_failure(subscription_id, exc)
        raise
    finally:
        client.close()
    record_renewal(subscription_id, expires_at)
    return {"expires_at": expires_at.isoformat() if expires_at else None}


def _renew_graph(client: OutlookClient, graph_id: str, reauthorize: bool) -> datetime | None:
    """PATCH a new expiry; when reauthorizing, try ``reauthorize`` first and PATCH on refusal."""
    if reauthorize:
        try:
            client.reauthorize_subscription(graph_id)
            return None
        except ValidationFailure as exc:
            if _gone(exc):
                raise
            log.warning("reauthorize of %s refused, renewing instead: %s", graph_id, exc)
    return client.renew_subscription(graph_id, _graph_expiration()).expires_at


def _gone(exc: BaseException) -> bool:
    cause = exc.__cause__
    return isinstance(cause, ProviderRequestError) and cause.status == 404


@app.task(  # type: ignore[untyped-decorator]
    bind=True,
    base=SubscriptionTask,
    name="tasks.webhooks.renew_subscription",
    store_arg=SUBSCRIPTION_ARG,
)
def renew_subscription(self: SubscriptionTask, subscription_id: str) -> dict[str, Any]:
    """Gmail: watch again; Graph: PATCH a new expiry. Recorded on the row either way."""
    result: dict[str, Any] = _renew(self, uuid.UUID(subscription_id), reauthorize=False)
    return result


@app.task(  # type: ignore[untyped-decorator]
    bind=True,
    base=SubscriptionTask,
    name="tasks.webhooks.reauthorize_subscription",
    store_arg=SUBSCRIPTION_ARG,
)
def reauthorize_subscription(self: SubscriptionTask, subscription_id: str) -> dict[str, Any]:
    """Answer Graph's reauthorizationRequired (falls back to renewing); Gmail renews."""
    result: dict[str, Any] = _renew(self, uuid.UUID(subscription_id), reauthorize=True)
    return result


@app.task(  # type: ignore[untyped-decorator]
    bind=True,
    base=SubscriptionTask,
    name="tasks.webhooks.recreate_subscription",
    store_arg=SUBSCRIPTION_ARG,
)
def recreate_subscription(self: SubscriptionTask, subscription_id: str) -> dict[str, Any]:
    """Replace a lost subscription with a new one, then resync what may have been missed."""
    old = load_subscription(uuid.UUID(subscription_id))
    if old.status is SubscriptionStatus.REMOVED and _has_newer_live(old.store_id, old.id):
        return {"skipped": "already replaced"}  # a redelivered or duplicate request
    new_id, created = _create(self, _load_store(old.store_id))
    try:
        job_id = request_sync(old.store_id, SyncTrigger.RESYNC)
    except StoreNotSyncable:  # paused meanwhile: its next activation syncs
        job_id = None
    return {
        "subscription_id": str(new_id),
        "replaced": subscription_id,
        "expires_at": created.expires_at.isoformat(),
        "sync_job_id": None if job_id is None else str(job_id),
    }


def _has_newer_live(store_id: uuid.UUID, old_id: uuid.UUID) -> bool:
    with service_session() as session:
        health = current_health(session, store_id)
    return health is not None and health.subscription_id != old_id


__all__ = [
    "create_subscription",
    "reauthorize_subscription",
    "recreate_subscription",
    "renew_subscription",
]
