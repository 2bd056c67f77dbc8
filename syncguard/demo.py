"""The demo: two businesses, four emulator mailboxes (healthy, flaky, throttled), kept in sync.

Talks to the provider emulator over its HTTP control API only (it never imports the emulator).
Seeding is idempotent: businesses are upserted by slug and stores by (provider, address). The
emulator keeps its mailboxes in memory, so a fresh emulator issues new credentials, and each
store's cursor and circuit are reset (the mailbox is new); against an emulator that already has the
mailbox, the stored credentials are checked and the mailbox is only topped up.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

import httpx
from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert

from models import Business, Provider, Store, StoreStatus
from providers.oauth import OAuthCredentials
from safeguards.circuit_breaker import reset_circuit_breaker
from syncguard.crypto import encrypt_json
from syncguard.db import service_session

#: Messages each demo mailbox holds after seeding.
MESSAGES_PER_MAILBOX = 25
#: How often the follow loop adds a message to a healthy mailbox and requests a sync, seconds.
FOLLOW_INTERVAL_S = 15.0
#: The demo businesses, by slug.
BUSINESSES = {"demo-bakery": "Demo Bakery", "demo-books": "Demo Books"}

Echo = Callable[[str], None]


class DemoError(RuntimeError):
    """The demo cannot be seeded (emulator unreachable, credentials that do not match)."""


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


class EmulatorControl:
    """A client of the emulator's control API and token endpoint."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def wait_ready(self, timeout_s: float) -> None:
        """Return once the emulator answers; DemoError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self._http.get("/_emulator/push").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise DemoError(f"the emulator at {self.url} did not answer within {timeout_s}s")
            time.sleep(0.2)

    def create_mailbox(self, provider: Provider, address: str) -> OAuthCredentials | None:
        """A new mailbox's credentials, or None when the emulator already has it."""
        body = {"provider": provider.value, "address": address}
        reply = self._call("POST", "/_emulator/mailboxes", json=body, accept=(201, 409))
        if reply.status_code == 409:
            return None
        grant = reply.json()
        return OAuthCredentials(grant["client_id"], grant["client_secret"], grant["refresh_token"])

    def credentials_work(self, credentials: OAuthCredentials) -> bool:
        """True if the emulator's token endpoint accepts ``credentials``."""
        form = {
            "grant_type": "refresh_token",
            "refresh_token": credentials.refresh_token,
            "client_id": credentials.client_id,
            "client_secret": credentials.client_secret,
        }
        reply = self._call("POST", "/oauth2/token", data=form, accept=(200, 400, 401))
        return reply.status_code == 200

    def message_count(self, address: str) -> int:
        """How many messages the mailbox holds."""
        return len(self._call("GET", f"/_emulator/mailboxes/{address}").json()["messages"])

    def add_message(self, address: str, subject: str, sender: str) -> str:
        """Add an unread inbox message; returns its id."""
        body = {"subject": subject, "sender": sender}
        reply = self._call("POST", f"/_emulator/mailboxes/{address}/messages", json=body)
        return str(reply.json()["id"])

    def set_faults(self, address: str, faults: dict[str, Any]) -> None:
        """Replace the mailbox's faults ({} clears them)."""
        self._call("PUT", f"/_emulator/mailboxes/{address}/faults", json=faults)

    def _call(
        self, method: str, path: str, *, accept: tuple[int, ...] = (200, 201), **kwargs: Any
    ) -> httpx.Response:
        try:
            reply = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise DemoError(f"emulator at {self.url} unreachable: {exc}") from exc
        if reply.status_code not in accept:
            raise DemoError(f"emulator {method} {path} answered {reply.status_code}: {reply.text}")
        return reply


def seed(emulator_url: str, echo: Echo = print) -> list[SeededStore]:
    """Create or refresh every demo business, mailbox and store, then request their syncs."""
    from tasks.sync_requests import request_sync  # lazy: the Celery app is needed only from here on

    with EmulatorControl(emulator_url) as emulator:
        businesses = {slug: _upsert_business(slug, name) for slug, name in BUSINESSES.items()}
        store_ids = [_seed_store(emulator, businesses, spec, echo) for spec in STORES]
    seeded = []
    for spec, store_id in zip(STORES, store_ids, strict=True):
        job_id = request_sync(store_id)
        seeded.append(SeededStore(spec, store_id, job_id))
        echo(f"{spec.address}: {_queued(store_id, job_id)}; expect: {spec.expect}")
    return seeded


def follow(
    emulator_url: str,
    seeded: list[SeededStore],
    stop: threading.Event,
    interval_s: float = FOLLOW_INTERVAL_S,
    echo: Echo = print,
) -> int:
    """Until ``stop`` is set: add a message to a healthy mailbox and sync it; returns how often."""
    from tasks.sync_requests import request_sync

    healthy = [s for s in seeded if not s.spec.faults]
    rounds = 0
    with EmulatorControl(emulator_url) as emulator:
        while healthy and not stop.wait(interval_s):
            target = healthy[rounds % len(healthy)]
            rounds += 1
            subject = f"Live order #{rounds} at {time.strftime('%H:%M:%S')}"
            try:
                emulator.add_message(target.spec.address, subject, _sender(target.spec))
                job_id = request_sync(target.store_id)
            except DemoError as exc:
                echo(f"demo: {exc}")  # the emulator is stopping or restarting: try next round
                continue
            queued = _queued(target.store_id, job_id)
            echo(f"{target.spec.address}: new message '{subject}', {queued}")
    return rounds


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
