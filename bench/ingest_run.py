"""One measured ingest, in a process of its own so its peak RSS is its own: ``bench.ingest``.

``python -m bench.ingest_run MODE PROVIDER COUNT`` with the database in DATABASE_URL, and for
``sync`` the seeded emulator's JSON line (``bench.ingest_emulator``) in BENCH_EMULATOR. Prints
one JSON line: ``{"rate": messages per second, "rss_mb": peak resident set, MiB}``.

Modes:
- ``sync``: the product's full sync (``SyncRun``, real guard with the store's limits raised,
  real adapter over HTTP against the emulator), page by page until the cursor is stored;
- ``naive``: the rows a user would write with the ORM, one ``INSERT`` per message, a commit
  per 100 (no provider calls: the database write alone);
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
from providers.base import MailProvider
from providers.gmail import GmailClient
from providers.oauth import OAuthCredentials
from providers.outlook import OutlookClient
from syncguard.db import service_session
from tasks.guard import CallScope, guarded_call
from tasks.sync.jobs import start_job
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


def _client(store: Store, emulator: dict[str, object]) -> MailProvider:
    grant = emulator["grant"]
    assert isinstance(grant, dict)
    creds = OAuthCredentials(grant["client_id"], grant["client_secret"], grant["refresh_token"])
    scope = CallScope(store.id, store.provider, store.provider.value)

    def guard(operation: str, cost: int) -> object:
        return guarded_call(scope, operation, cost=cost)

    url = str(emulator["url"])
    if store.provider is Provider.GMAIL:
        return GmailClient(
            creds,
            base_url=url,
            token_url=f"{url}/oauth2/token",
            call_guard=guard,  # type: ignore[arg-type]
            page_size=PAGE_SIZE,
        )
    return OutlookClient(
        creds,
        base_url=url,
        token_url=f"{url}/oauth2/v2.0/token",
        call_guard=guard,  # type: ignore[arg-type]
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
    rate = {"sync": run_sync, "naive": run_naive, "copy": run_copy}[mode](provider, count)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rate": rate, "rss_mb": rss_mb}), flush=True)


if __name__ == "__main__":
    main()
