"""The demo against real emulators, a real API and a real worker: healthy, throttled, flaky;
then event-driven: new mail reaches the local copy through the providers' notifications."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import httpx
from sqlalchemy import Engine, func, select

from models import Business, Store, StoreStatus, SyncJobStatus, SyncTrigger
from providers.emulator.runner import EmulatorHandle, free_port, running_emulator
from safeguards import ArchiveFilter, list_entries
from syncguard.cli.demo import (
    BUSINESSES,
    MESSAGES_PER_MAILBOX,
    STORES,
    SeededStore,
    follow,
    seed,
    subscribe,
)
from syncguard.db import service_session
from tests.sync_support import FINAL, emulator_env, eventually, jobs_of, local_copy, wait_for_job
from tests.worker import running_worker, stop

ADDRESSES = [spec.address for spec in STORES]
FLAKY = "bakery-flaky@demo.syncguard.test"
THROTTLED = "books-throttled@demo.syncguard.test"


def _demo_rows(engine: Engine) -> tuple[int, dict[str, Store]]:
    with service_session(engine) as session:
        businesses = session.scalar(
            select(func.count()).select_from(Business).where(Business.slug.in_(BUSINESSES))
        )
        stores = session.scalars(select(Store).where(Store.mailbox_address.in_(ADDRESSES)))
        return businesses or 0, {s.mailbox_address: s for s in stores}


def _mailbox_ids(emulator: EmulatorHandle, address: str) -> set[str]:
    reply = httpx.get(f"{emulator.url}/_emulator/mailboxes/{address}")
    reply.raise_for_status()
    return {m["id"] for m in reply.json()["messages"]}


def _all_final(engine: Engine, store_ids: list[uuid.UUID]) -> bool:
    return all(job.status in FINAL for s in store_ids for job in jobs_of(engine, s))


@contextmanager
def _running_api(emulator: EmulatorHandle) -> Iterator[str]:
    """`uvicorn api:app` in its own process, trusting the emulator's push tokens (as `up` does)."""
    push = httpx.get(f"{emulator.url}/_emulator/push").json()
    port = free_port()
    env = {
        **os.environ,
        "SYNCGUARD_GMAIL_PUSH_JWKS_URL": f"{emulator.url}/_emulator/oauth2/v3/certs",
        "SYNCGUARD_GMAIL_PUSH_SERVICE_ACCOUNT": push["service_account_email"],
    }
    argv = [sys.executable, "-m", "uvicorn", "api:app", "--port", str(port)]
    proc = subprocess.Popen([*argv, "--log-level", "warning"], env=env)
    try:
        yield f"http://127.0.0.1:{port}"  # subscribe() waits for its /healthz
    finally:
        stop(proc)


def test_seeding_is_idempotent_and_the_worker_shows_every_outcome(engine: Engine) -> None:
    lines: list[str] = []
    # An emulator that then goes away: the demo store rows and queued syncs outlive it.
    with running_emulator() as gone:
        first = seed(gone.url, echo=lines.append)
    assert all(s.job_id is not None for s in first)
    stale = _demo_rows(engine)[1]

    with running_emulator() as emulator:
        # A fresh emulator issues new grants and new histories; the queued syncs cover it.
        again = seed(emulator.url, echo=lines.append)
        businesses, stores = _demo_rows(engine)
        assert (businesses, len(stores)) == (2, len(STORES))
        assert [s.store_id for s in again] == [s.store_id for s in first]
        assert all(s.job_id is None for s in again)  # folded into the pending syncs
        for address, store in stores.items():
            assert store.credentials_encrypted != stale[address].credentials_encrypted
            assert (store.sync_cursor, store.status) == (None, StoreStatus.ACTIVE)
        assert all(len(_mailbox_ids(emulator, a)) == MESSAGES_PER_MAILBOX for a in ADDRESSES)

        # Seeding the same emulator again changes nothing.
        third = seed(emulator.url, echo=lines.append)
        assert [s.store_id for s in third] == [s.store_id for s in first]
        assert _demo_rows(engine)[0] == 2 and len(_demo_rows(engine)[1]) == len(STORES)
        assert all(len(_mailbox_ids(emulator, a)) == MESSAGES_PER_MAILBOX for a in ADDRESSES)
        assert sum("existing mailbox, 0 messages added" in line for line in lines) == len(STORES)

        with _running_api(emulator) as api_url:
            env = {
                **emulator_env(emulator),
                "SYNCGUARD_PUBLIC_BASE_URL": api_url,  # Graph notifies (and handshakes) there
                "SYNCGUARD_MAX_BACKOFF_S": "1",
                # Above the throttled store's 3 x 2 s Retry-After, so only the flaky store archives.
                "SYNCGUARD_DEFER_HORIZON_S": "8",
            }
            with running_worker(env=env, purge_first=False):
                _check_outcomes(engine, emulator, first)
                subscribed = subscribe(
                    emulator.url, api_url, first, echo=lines.append, timeout_s=30
                )
                healthy = [s for s in first if not s.spec.faults]
                assert [s.store_id for s in subscribed] == [s.store_id for s in healthy]
                _check_follow(engine, emulator, first)
                store_ids = [s.store_id for s in first]
                eventually(lambda: _all_final(engine, store_ids), timeout_s=30)


def _check_outcomes(engine: Engine, emulator: EmulatorHandle, seeded: list[SeededStore]) -> None:
    for store in seeded:
        assert store.job_id is not None
        job = wait_for_job(engine, store.job_id, timeout_s=40)
        if store.spec.address == FLAKY:
            assert job.status is SyncJobStatus.ARCHIVED, job.error_message
            [entry] = list_entries(ArchiveFilter(store_id=store.store_id))
            assert entry.task == "tasks.sync.sync_store"
            assert entry.kwargs == {"job_id": str(store.job_id)}
            continue
        assert job.status is SyncJobStatus.SUCCEEDED, job.error_message
        assert job.deferrals >= (1 if store.spec.address == THROTTLED else 0)
        assert _in_sync(engine, emulator, store)


def _check_follow(engine: Engine, emulator: EmulatorHandle, seeded: list[SeededStore]) -> None:
    healthy = [s for s in seeded if not s.spec.faults]
    before = {s.store_id: len(jobs_of(engine, s.store_id)) for s in healthy}
    done = threading.Event()
    lines: list[str] = []

    def landed(store: SeededStore) -> bool:
        return any(x.startswith(f"{store.spec.address}: 'Live order #") for x in lines)

    def echo(line: str) -> None:
        lines.append(line)
        if all(landed(s) for s in healthy):
            done.set()

    # follow requests no sync: only the providers' notifications, through the API, start them.
    assert follow(emulator.url, seeded, done, interval_s=1.0, echo=echo) >= len(healthy)
    assert all(landed(s) for s in healthy), lines
    for store in healthy:  # live messages round robin, each synced
        added = [x for x in lines if x.startswith(f"{store.spec.address}: new message 'Live")]
        assert added and all(x.endswith("(no sync requested)") for x in added), lines
        assert len(_mailbox_ids(emulator, store.spec.address)) == MESSAGES_PER_MAILBOX + len(added)
        eventually(partial(_in_sync, engine, emulator, store), 30)
        new_jobs = jobs_of(engine, store.store_id)[before[store.store_id] :]
        assert new_jobs and new_jobs[0].trigger is SyncTrigger.WEBHOOK, new_jobs


def _in_sync(engine: Engine, emulator: EmulatorHandle, store: SeededStore) -> bool:
    return set(local_copy(engine, store.store_id)) == _mailbox_ids(emulator, store.spec.address)
