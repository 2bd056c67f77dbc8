"""One measured ingest, in a process of its own so its peak RSS is its own: ``bench.ingest``.

``python -m bench.ingest_run MODE PROVIDER COUNT`` with the database in DATABASE_URL, and for
``sync`` the seeded emulator's JSON line (``bench.ingest_emulator``) in BENCH_EMULATOR. Prints
one JSON line: ``{"rate": messages per second, "rss_mb": peak resident set, MiB}``.

Modes:
- ``sync``: the product's full sync (``SyncRun``, real guard with the store's limits raised,
  real adapter over HTTP against the emulator), page by page until the cursor is stored;
- ``naive``: the naive product, the same fetching without syncguard: the same adapter, page
  size and Gmail batching over HTTP against the same emulator, no guard, then one ORM
  ``INSERT`` per message and a commit per page (no upsert, no checkpoint, no cursor);
- ``insert``: the naive write alone: pre-built rows, one ORM ``INSERT`` each, a commit per 100
  (no provider calls);
- ``write``: our write alone: the same rows as pages of ``PAGE_SIZE`` messages, each written by
  ``upsert_messages`` in a transaction of its own (no provider calls);
- ``fetch``: the naive product's fetching alone (same adapter, no guard, nothing written): the
  ceiling of any sync through this emulator on this machine;
- ``copy``: PostgreSQL ``COPY`` of the same rows (no upsert, no provider calls): the ceiling.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import uuid
from datetime import UTC, datetime

from sqlalchemy import create_engine, delete, func, select

from models import Business, Provider, Store, SyncedMessage
from models.safeguards import ProviderRateLimit
from providers.base import MailProvider, RemoteMessage, no_guard
from providers.gmail import GmailClient
from providers.oauth import OAuthCredentials
from providers.outlook import OutlookClient
from syncguard.db import service_session
from tasks.guard import CallScope, guarded_call
from tasks.sync.jobs import start_job
from tasks.sync.mailbox_copy import upsert_messages
from tasks.sync.pipeline import SyncRun
from tasks.sync.requests import sync_flight

#: Limits the run's store gets: far above what the run spends (the bench measures ingest).
RAISED = 2**31 - 1
#: Messages per provider page (Gmail's messages.list allows 500, Graph's delta up to 1,000).
PAGE_SIZE = 500


def _store(provider: Provider) -> Store:
    with service_session() as session:
        business = Business(name="bench", slug=f"bench-{uuid.uuid4().hex[:8]}")
        session.add(business)
        session.flush()
        store = Store(
            business_id=business.id,
            provider=provider,
            mailbox_address=f"bench-{uuid.uuid4().hex[:8]}@ingest.test",
        )
        session.add(store)
        session.flush()
        session.add(
            ProviderRateLimit(
                business_id=business.id,
                store_id=store.id,
                provider=provider,
                requests_per_minute=RAISED,
                requests_per_hour=RAISED,
                requests_per_day=RAISED,
                concurrency_limit=1000,
            )
        )
        session.expunge(store)
        return store


def _client(store: Store, emulator: dict[str, object], *, guarded: bool = True) -> MailProvider:
    """The store's adapter on the emulator; ``guarded=False`` is the naive product's (no guard)."""
    grant = emulator["grant"]
    assert isinstance(grant, dict)
    creds = OAuthCredentials(grant["client_id"], grant["client_secret"], grant["refresh_token"])
    scope = CallScope(store.id, store.provider, store.provider.value)

    def guard(operation: str, cost: int) -> object:
        return guarded_call(scope, operation, cost=cost)

    call_guard = guard if guarded else no_guard
    url = str(emulator["url"])
    if store.provider is Provider.GMAIL:
        return GmailClient(
            creds,
            base_url=url,
            token_url=f"{url}/oauth2/token",
            call_guard=call_guard,  # type: ignore[arg-type]
            page_size=PAGE_SIZE,
        )
    return OutlookClient(
        creds,
        base_url=url,
        token_url=f"{url}/oauth2/v2.0/token",
        call_guard=call_guard,  # type: ignore[arg-type]
        page_size=PAGE_SIZE,
    )


def run_sync(provider: Provider, count: int) -> float:
    """The product's full sync of the seeded mailbox; messages per second."""
    emulator = json.loads(os.environ["BENCH_EMULATOR"])
    store = _store(provider)
    task_id = str(uuid.uuid4())
    job = start_job(store.id, None, task_id)
    assert job is not None
    sync_flight().acquire(str(store.id), str(job.id))
    client = _client(store, emulator)
    started = time.perf_counter()
    run = SyncRun(client, store, job, task_id).run()
    while not run.done:  # a continuation resumes from the checkpoint, as the task's does
        job.checkpoint = run.checkpoint
        run = SyncRun(client, store, job, task_id).run()
    elapsed = time.perf_counter() - started
    client.close()
    _check_and_drop(store.id, count)
    return count / elapsed


def _rows(store_id: uuid.UUID, count: int) -> list[dict[str, object]]:
    now = datetime.now(UTC)
    return [
        {
            "store_id": store_id,
            "provider_message_id": f"{i:016x}",
            "thread_id": f"{i:016x}",
            "labels": ["INBOX", "Label_orders", "UNREAD"],
            "subject": f"Your order #{i} has shipped",
            "sender": f"shop{i % 97}@example.com",
            "received_at": now,
            "size_bytes": 512,
            "provider_version": str(1000 + i),
            "extra": {},
        }
        for i in range(count)
    ]


def run_naive(provider: Provider, count: int) -> float:
    """The naive product: the same adapter without a guard, one ORM INSERT per message, a
    commit per page; stops after the page that reaches ``count`` messages (the emulator holds
    at least that many). Messages per second, fetching included."""
    emulator = json.loads(os.environ["BENCH_EMULATOR"])
    store = _store(provider)
    client = _client(store, emulator, guarded=False)
    stored, token = 0, None
    started = time.perf_counter()
    while stored < count:
        page = client.list_page(token)
        with service_session() as session:
            for message in page.messages[: count - stored]:
                session.add(
                    SyncedMessage(
                        store_id=store.id,
                        provider_message_id=message.provider_message_id,
                        thread_id=message.thread_id,
                        labels=list(message.labels),
                        subject=message.subject,
                        sender=message.sender,
                        received_at=message.received_at,
                        size_bytes=message.size_bytes,
                        provider_version=message.version,
                        extra={},
                    )
                )
                session.flush()
                stored += 1
        if page.next_page_token is None:
            break
        token = page.next_page_token
    elapsed = time.perf_counter() - started
    client.close()
    _check_and_drop(store.id, count)
    return count / elapsed


def run_fetch(provider: Provider, count: int) -> float:
    """The unguarded adapter's listing alone, nothing written; messages per second."""
    emulator = json.loads(os.environ["BENCH_EMULATOR"])
    store = _store(provider)
    client = _client(store, emulator, guarded=False)
    fetched, token = 0, None
    started = time.perf_counter()
    while fetched < count:
        page = client.list_page(token)
        fetched += len(page.messages)
        if page.next_page_token is None:
            break
        token = page.next_page_token
    elapsed = time.perf_counter() - started
    client.close()
    if fetched < count:
        raise RuntimeError(f"fetched {fetched} of {count} messages")
    return count / elapsed


def run_insert(provider: Provider, count: int) -> float:
    """One ORM INSERT per message, a commit per 100; messages per second."""
    store = _store(provider)
    rows = _rows(store.id, count)
    started = time.perf_counter()
    for first in range(0, count, 100):
        with service_session() as session:
            for row in rows[first : first + 100]:
                session.add(SyncedMessage(**row))
                session.flush()
    elapsed = time.perf_counter() - started
    _check_and_drop(store.id, count)
    return count / elapsed


def run_write(provider: Provider, count: int) -> float:
    """Our write path alone: pages of ``PAGE_SIZE`` through ``upsert_messages``, a transaction
    each (as ``SyncRun`` commits a page); messages per second."""
    store = _store(provider)
    now = datetime.now(UTC)
    # The fields of ``_rows``: the same rows the naive loop writes.
    messages = [
        RemoteMessage(
            provider_message_id=f"{i:016x}",
            thread_id=f"{i:016x}",
            labels=("INBOX", "Label_orders", "UNREAD"),
            subject=f"Your order #{i} has shipped",
            sender=f"shop{i % 97}@example.com",
            received_at=now,
            size_bytes=512,
            version=str(1000 + i),
        )
        for i in range(count)
    ]
    started = time.perf_counter()
    for first in range(0, count, PAGE_SIZE):
        with service_session() as session:
            upsert_messages(session, store.id, messages[first : first + PAGE_SIZE])
    elapsed = time.perf_counter() - started
    _check_and_drop(store.id, count)
    return count / elapsed


def run_copy(provider: Provider, count: int) -> float:
    """PostgreSQL COPY of the same rows, one transaction; messages per second."""
    store = _store(provider)
    rows = _rows(store.id, count)
    columns = list(rows[0])
    started = time.perf_counter()
    # As the connecting (owner) role: COPY FROM refuses a table under row-level security.
    engine = create_engine(os.environ["DATABASE_URL"])
    with engine.begin() as conn:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        statement = f"COPY synced_messages ({', '.join(columns)}) FROM STDIN"
        with cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row([json.dumps(v) if k == "extra" else v for k, v in row.items()])
    elapsed = time.perf_counter() - started
    engine.dispose()
    _check_and_drop(store.id, count)
    return count / elapsed


def _check_and_drop(store_id: uuid.UUID, count: int) -> None:
    """The run stored every message (else its figure means nothing); then make room."""
    where = SyncedMessage.store_id == store_id
    with service_session() as session:
        stored = session.scalar(select(func.count()).select_from(SyncedMessage).where(where))
        if stored != count:
            raise RuntimeError(f"stored {stored} of {count} messages")
        session.execute(delete(SyncedMessage).where(where))


def main() -> None:
    """Run one mode; print its rate and this process's peak RSS."""
    mode, provider, count = sys.argv[1], Provider(sys.argv[2]), int(sys.argv[3])
    modes = {
        "sync": run_sync,
        "naive": run_naive,
        "insert": run_insert,
        "write": run_write,
        "fetch": run_fetch,
        "copy": run_copy,
    }
    rate = modes[mode](provider, count)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rate": rate, "rss_mb": rss_mb}), flush=True)


if __name__ == "__main__":
    main()
