"""The demo seeding against real emulators, synced by a real worker: healthy, throttled, flaky."""

from __future__ import annotations

import threading
import uuid
from functools import partial

import httpx
from sqlalchemy import Engine, func, select

from models import Business, Store, StoreStatus, SyncJobStatus
from providers.emulator.runner import EmulatorHandle, running_emulator
from safeguards import ArchiveFilter, list_entries
from syncguard.db import service_session
from syncguard.demo import BUSINESSES, MESSAGES_PER_MAILBOX, STORES, SeededStore, follow, seed
from tests.sync_support import FINAL, emulator_env, eventually, jobs_of, local_copy, wait_for_job
from tests.worker import running_worker

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

        env = {
            **emulator_env(emulator),
            "SYNCGUARD_MAX_BACKOFF_S": "1",
            # Above the throttled store's 3 x 2 s Retry-After, so only the flaky store archives.
            "SYNCGUARD_DEFER_HORIZON_S": "8",
        }
        with running_worker(env=env):
            _check_outcomes(engine, emulator, first)
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
    stop = threading.Event()
    lines: list[str] = []

    def echo(line: str) -> None:
        lines.append(line)
        if len(lines) == 2:
            stop.set()

    assert follow(emulator.url, seeded, stop, interval_s=0.05, echo=echo) == 2
    assert all("new message 'Live order #" in line for line in lines)
    healthy = [s for s in seeded if not s.spec.faults]
    for store in healthy:  # one live message each, round robin, then synced
        assert len(_mailbox_ids(emulator, store.spec.address)) == MESSAGES_PER_MAILBOX + 1
        eventually(partial(_in_sync, engine, emulator, store), 30)


def _in_sync(engine: Engine, emulator: EmulatorHandle, store: SeededStore) -> bool:
    return set(local_copy(engine, store.store_id)) == _mailbox_ids(emulator, store.spec.address)
