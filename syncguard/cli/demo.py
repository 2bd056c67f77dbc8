"""The demo: two businesses, four emulator mailboxes (healthy, flaky, throttled), kept in sync.

Talks to the provider emulator over its HTTP control API only (it never imports the emulator).
Seeding is idempotent: businesses are upserted by slug and stores by (provider, address). The
emulator keeps its mailboxes in memory, so a fresh emulator issues new credentials, and each
store's cursor and circuit are reset (the mailbox is new); against an emulator that already has the
mailbox, the stored credentials are checked and the mailbox is only topped up.

Then the demo goes event-driven: ``subscribe`` points the emulator's Gmail pushes at the API,
waits for the API and for the healthy stores' first syncs, and opens their Gmail watch / Graph
subscription; from then on ``follow`` only adds mail, and the providers' notifications, through
the API, start the syncs.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from models import Business, Provider, Store, StoreStatus, SyncedMessage, SyncJob, SyncJobStatus
from safeguards.circuit_breaker.breaker import reset_circuit_breaker
from syncguard.cli.emulator_control import DemoError, EmulatorControl
from syncguard.crypto import encrypt_json
from syncguard.db import service_session
from syncguard.settings import get_settings

#: Messages each demo mailbox holds after seeding.
MESSAGES_PER_MAILBOX = 25
#: How often the follow loop adds a message to a healthy mailbox, seconds.
FOLLOW_INTERVAL_S = 15.0
#: How long ``subscribe`` waits for the API, the first syncs and each subscription, seconds.
SUBSCRIBE_TIMEOUT_S = 120.0
#: The task that opens a store's Gmail watch or Graph subscription (sent by name).
CREATE_SUBSCRIPTION_TASK = "tasks.webhooks.create_subscription"
#: Sync job states after which a job does nothing more.
_FINAL = (SyncJobStatus.SUCCEEDED, SyncJobStatus.FAILED, SyncJobStatus.ARCHIVED)
#: The demo businesses, by slug.
BUSINESSES = {"demo-bakery": "Demo Bakery", "demo-books": "Demo Books"}

Echo = Callable[[str], None]


@dataclass(frozen=True)
class DemoStore:
    """One demo store: its business, mailbox, and the faults its mailbox answers with."""

    business_slug: str
    provider: Provider
    address: str
    display_name: str
    #: What the demo shows with this store, for the log.
    expect: str = "syncs"
    faults: dict[str, Any] = field(default_factory=dict)


STORES = (
    DemoStore("demo-bakery", Provider.GMAIL, "bakery@demo.syncguard.test", "Bakery orders"),
    DemoStore("demo-books", Provider.OUTLOOK, "books@demo.syncguard.test", "Books orders"),
    DemoStore(
        "demo-bakery",
        Provider.GMAIL,
        "bakery-flaky@demo.syncguard.test",
        "Bakery wholesale (flaky: 503 always)",
        "503 always: retries, trips its circuit, lands in failed_job_archive",
        {"server_error": {"status": 503, "count": "always"}},
    ),
    DemoStore(
        "demo-books",
        Provider.OUTLOOK,
        "books-throttled@demo.syncguard.test",
        "Books events (throttled: 429 x3)",
        "429 with Retry-After 3 times: deferred (no retry used), then syncs",
        {"throttle_429": {"count": 3, "retry_after": 2}},
    ),
)


@dataclass(frozen=True)
class SeededStore:
    """A demo store after seeding: its row id and the sync job requested (None: folded)."""

    spec: DemoStore
    store_id: uuid.UUID
    job_id: uuid.UUID | None


def seed(emulator_url: str, echo: Echo = print) -> list[SeededStore]:
    """Create or refresh every demo business, mailbox and store, then request their syncs."""
    from tasks.sync.requests import request_sync  # lazy: the Celery app is needed only from here on

    with EmulatorControl(emulator_url) as emulator:
        businesses = {slug: _upsert_business(slug, name) for slug, name in BUSINESSES.items()}
        store_ids = [_seed_store(emulator, businesses, spec, echo) for spec in STORES]
    seeded = []
    for spec, store_id in zip(STORES, store_ids, strict=True):
        job_id = request_sync(store_id)
        seeded.append(SeededStore(spec, store_id, job_id))
        echo(f"{spec.address}: {_queued(store_id, job_id)}; expect: {spec.expect}")
    return seeded


def subscribe(
    emulator_url: str,
    api_url: str,
    seeded: list[SeededStore],
    echo: Echo = print,
    timeout_s: float = SUBSCRIBE_TIMEOUT_S,
) -> list[SeededStore]:
    """Make the healthy stores event-driven: push target, API up, first syncs, subscriptions.

    Points the emulator's Gmail pushes at ``{api_url}/webhooks/gmail`` (signed as the API's
    ``gmail_push_service_account`` when set), waits for the API's ``/healthz`` (Graph's handshake
    calls it back) and for each healthy store's first sync, then has a worker run
    ``create_subscription`` for each. Returns the stores subscribed. The faulty stores keep
    their seeding sync only: their stories are the retries and the deferrals.
    """
    from tasks import app  # lazy, like request_sync: the Celery app and its broker settings

    api = api_url.rstrip("/")
    healthy = [s for s in seeded if not s.spec.faults]
    with EmulatorControl(emulator_url) as emulator:
        emulator.set_push(f"{api}/webhooks/gmail", get_settings().gmail_push_service_account)
    echo(f"demo: Gmail pushes go to {api}/webhooks/gmail; waiting for the API")
    wait_for_api(api, timeout_s)
    deadline = time.monotonic() + timeout_s
    for store in healthy:
        if not _wait_idle(store.store_id, deadline):
            echo(f"{store.spec.address}: first sync not finished yet; subscribing anyway")
    pending = [
        (store, app.send_task(CREATE_SUBSCRIPTION_TASK, args=[str(store.store_id)]))
        for store in healthy
    ]
    subscribed = []
    for store, result in pending:
        kind = "Gmail watch" if store.spec.provider is Provider.GMAIL else "Graph subscription"
        try:
            created = result.get(timeout=max(1.0, deadline - time.monotonic()))
        except Exception as exc:  # a timeout or the task's own failure: the demo goes on
            echo(f"{store.spec.address}: {kind} not created: {exc!r}")
            continue
        subscribed.append(store)
        echo(
            f"{store.spec.address}: {kind} open until {created['expires_at']}; "
            "new mail now syncs on the provider's notification"
        )
    return subscribed


def wait_for_api(api_url: str, timeout_s: float) -> None:
    """Return once ``{api_url}/healthz`` answers 200; DemoError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    url = f"{api_url.rstrip('/')}/healthz"
    while True:
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise DemoError(f"the API at {api_url} did not answer /healthz within {timeout_s}s")
        time.sleep(0.2)


def follow(
    emulator_url: str,
    seeded: list[SeededStore],
    stop: threading.Event,
    interval_s: float = FOLLOW_INTERVAL_S,
    echo: Echo = print,
) -> int:
    """Until ``stop`` is set: add a message to a healthy mailbox; returns how many were added.

    Requests no sync: the provider notifies the API, the API enqueues the sync. Each message's
    arrival in ``synced_messages`` is reported when seen (checked a few times a second).
    """
    healthy = [s for s in seeded if not s.spec.faults]
    rounds = 0
    landing: list[_Landing] = []
    next_at = time.monotonic() + interval_s
    with EmulatorControl(emulator_url) as emulator:
        while healthy and not stop.wait(min(_LANDING_POLL_S, max(0.0, next_at - time.monotonic()))):
            landing = _report_landed(landing, echo)
            if time.monotonic() < next_at:
                continue
            next_at += interval_s
            target = healthy[rounds % len(healthy)]
            rounds += 1
            subject = f"Live order #{rounds} at {time.strftime('%H:%M:%S')}"
            added_at = datetime.now(UTC)
            try:
                message_id = emulator.add_message(
                    target.spec.address, subject, _sender(target.spec)
                )
            except DemoError as exc:
                echo(f"demo: {exc}")  # the emulator is stopping or restarting: try next round
                continue
            landing.append(_Landing(target, message_id, subject, added_at))
            echo(f"{target.spec.address}: new message '{subject}' (no sync requested)")
    return rounds


#: How often ``follow`` looks for its messages in ``synced_messages``, seconds.
_LANDING_POLL_S = 0.2
#: A message not synced after this long is no longer watched for, seconds.
_LANDING_WATCH_S = 120.0


@dataclass(frozen=True)
class _Landing:
    store: SeededStore
    message_id: str
    subject: str
    added_at: datetime


def _report_landed(landing: list[_Landing], echo: Echo) -> list[_Landing]:
    """Echo the messages that reached the local copy; returns those still awaited."""
    if not landing:
        return landing
    waiting = []
    with service_session() as session:
        for item in landing:
            synced_at = session.scalar(
                select(SyncedMessage.created_at).where(
                    SyncedMessage.store_id == item.store.store_id,
                    SyncedMessage.provider_message_id == item.message_id,
                )
            )
            age_s = (datetime.now(UTC) - item.added_at).total_seconds()
            if synced_at is None:
                if age_s < _LANDING_WATCH_S:
                    waiting.append(item)
                continue
            trigger = session.scalar(
                select(SyncJob.trigger)
                .where(SyncJob.store_id == item.store.store_id)
                .where(SyncJob.created_at >= item.added_at)
                .order_by(SyncJob.created_at)
                .limit(1)
            )
            after_ms = max(0.0, (synced_at - item.added_at).total_seconds() * 1000)
            by = f" by a {trigger}-triggered sync" if trigger is not None else ""
            echo(f"{item.store.spec.address}: '{item.subject}' synced{by}, {after_ms:.0f} ms after")
    return waiting


def _wait_idle(store_id: uuid.UUID, deadline: float) -> bool:
    """Wait until no sync of the store is queued or running; False at ``deadline``."""
    while True:
        with service_session() as session:
            busy = session.scalar(
                select(func.count())
                .select_from(SyncJob)
                .where(SyncJob.store_id == store_id, SyncJob.status.not_in(_FINAL))
            )
        if not busy:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


def _upsert_business(slug: str, name: str) -> uuid.UUID:
    stmt = insert(Business).values(name=name, slug=slug)
    stmt = stmt.on_conflict_do_update(
        index_elements=[Business.slug], set_={"name": name, "updated_at": func.now()}
    )
    with service_session() as session:
        return session.scalars(stmt.returning(Business.id)).one()


def _seed_store(
    emulator: EmulatorControl, businesses: dict[str, uuid.UUID], spec: DemoStore, echo: Echo
) -> uuid.UUID:
    credentials = emulator.create_mailbox(spec.provider, spec.address)
    values: dict[str, Any] = {
        "business_id": businesses[spec.business_slug],
        "display_name": spec.display_name,
    }
    if credentials is not None:
        # A new mailbox: new grant, new history; the old cursor means nothing to it.
        values |= {
            "credentials_encrypted": encrypt_json(credentials.to_dict()),
            "sync_cursor": None,
            "cursor_updated_at": None,
            "status": StoreStatus.ACTIVE,
            "status_reason": None,
        }
    store_id = _upsert_store(spec, values)
    if credentials is None:
        _check_existing(emulator, spec, store_id)
    else:
        # A new provider side too: a circuit tripped by the last demo run would hide the story.
        reset_circuit_breaker(store_id, spec.provider.value)
    added = 0
    for n in range(emulator.message_count(spec.address) + 1, MESSAGES_PER_MAILBOX + 1):
        emulator.add_message(spec.address, _subject(spec, n), _sender(spec))
        added += 1
    emulator.set_faults(spec.address, spec.faults)
    state = "new mailbox" if credentials is not None else "existing mailbox"
    echo(f"{spec.address} ({spec.provider}): {state}, {added} messages added")
    return store_id


def _upsert_store(spec: DemoStore, values: dict[str, Any]) -> uuid.UUID:
    key = {"provider": spec.provider, "mailbox_address": spec.address}
    stmt = insert(Store).values(**key, **values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[Store.provider, Store.mailbox_address],
        set_={**values, "updated_at": func.now()},
    )
    with service_session() as session:
        return session.scalars(stmt.returning(Store.id)).one()


def _check_existing(emulator: EmulatorControl, spec: DemoStore, store_id: uuid.UUID) -> None:
    from tasks.provider_clients import store_credentials  # lazy, like request_sync

    with service_session() as session:
        store = session.get_one(Store, store_id)
        stored = store_credentials(store) if store.credentials_encrypted else None
    if stored is None or not emulator.credentials_work(stored):
        raise DemoError(
            f"the emulator at {emulator.url} already has {spec.address}, but the store's saved "
            "credentials do not match it (seeded from another database?): restart the emulator"
        )


def _queued(store_id: uuid.UUID, job_id: uuid.UUID | None) -> str:
    if job_id is None:
        return f"folded into the pending sync of store {store_id}"
    return f"sync job {job_id} queued for store {store_id}"


def _sender(spec: DemoStore) -> str:
    return "orders@flourmill.test" if spec.business_slug == "demo-bakery" else "orders@press.test"


def _subject(spec: DemoStore, n: int) -> str:
    bakery = spec.business_slug == "demo-bakery"
    items = ("sourdough", "croissants", "rye loaf") if bakery else ("atlas", "novel", "poems")
    return f"Order #{1000 + n}: {items[n % len(items)]} x{n % 4 + 1}"
