"""End to end: the emulator notifies the API over HTTP, the API enqueues, a real worker syncs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import Engine

from models import Provider, SyncJobStatus
from providers.emulator.runner import EmulatorHandle, free_port, running_emulator
from tasks.webhooks import create_subscription
from tests.providers import Mailbox
from tests.sync_support import (
    FINAL,
    connect_store,
    emulator_env,
    eventually,
    jobs_of,
    local_copy,
    mailbox_copy,
)
from tests.worker import running_worker, stop


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


@pytest.fixture(scope="module")
def api_url(emulator: EmulatorHandle) -> Iterator[str]:
    """The real API (`uvicorn api:app`) in its own process, trusting the emulator's push key."""
    control = httpx.Client(base_url=f"{emulator.url}/_emulator", timeout=10)
    push = control.get("/push").json()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "SYNCGUARD_GMAIL_PUSH_JWKS_URL": f"{emulator.url}/_emulator/oauth2/v3/certs",
        "SYNCGUARD_GMAIL_PUSH_SERVICE_ACCOUNT": push["service_account_email"],
    }
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "api:app",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(argv, env=env)
    try:
        eventually(lambda: _answers(f"{url}/healthz"), timeout_s=30)
        control.put("/push", json={"gmail_push_url": f"{url}/webhooks/gmail"}).raise_for_status()
        yield url
    finally:
        stop(proc)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module", autouse=True)
def worker(emulator: EmulatorHandle, api_url: str) -> Iterator[None]:
    env = {**emulator_env(emulator), "SYNCGUARD_PUBLIC_BASE_URL": api_url}
    with running_worker(concurrency=2, env=env):
        yield


def _idle(engine: Engine, store_id: uuid.UUID) -> int:
    """Wait until no job of the store is pending; the number of its jobs."""
    jobs = eventually(
        lambda: (j := jobs_of(engine, store_id)) and all(x.status in FINAL for x in j) and j
    )
    assert all(j.status is SyncJobStatus.SUCCEEDED for j in jobs), [j.error_message for j in jobs]
    return len(jobs)


def _subscribed(
    engine: Engine, emulator: EmulatorHandle, provider: Provider
) -> tuple[uuid.UUID, Mailbox]:
    store_id, mailbox = connect_store(engine, emulator, provider)
    mailbox.add("before the subscription")
    create_subscription.delay(str(store_id)).get(timeout=30)
    return store_id, mailbox


@pytest.mark.parametrize("provider", [Provider.GMAIL, Provider.OUTLOOK])
def test_a_new_message_reaches_the_local_copy_through_a_notification(
    engine: Engine, emulator: EmulatorHandle, provider: Provider
) -> None:
    store_id, mailbox = _subscribed(engine, emulator, provider)
    if provider is Provider.OUTLOOK:  # Graph sends nothing at subscription time: sync once
        from tasks.sync.requests import request_sync

        request_sync(store_id)
    _idle(engine, store_id)
    before = len(jobs_of(engine, store_id))

    new_id = mailbox.add("new order #1001")

    # No request_sync here: only the provider's notification can start the sync.
    eventually(lambda: new_id in local_copy(engine, store_id), timeout_s=30)
    assert local_copy(engine, store_id) == mailbox_copy(mailbox, provider)
    assert len(jobs_of(engine, store_id)) > before
    pushed = [d for d in mailbox.stats()["deliveries"] if d["kind"] != "graph_validation"]
    assert pushed and all(d["status"] in (202, 204) for d in pushed)


@pytest.mark.parametrize("provider", [Provider.GMAIL, Provider.OUTLOOK])
def test_a_burst_of_200_notifications_causes_at_most_two_syncs(
    engine: Engine, emulator: EmulatorHandle, provider: Provider
) -> None:
    store_id, mailbox = _subscribed(engine, emulator, provider)
    from tasks.sync.requests import request_sync

    request_sync(store_id)
    _idle(engine, store_id)
    mailbox.add("one more")
    time.sleep(1.5)  # let the add's own notification sync and finish
    before = _idle(engine, store_id)
    # The first sync's first provider call hangs until the whole burst has been delivered.
    mailbox.faults(slow_ms=6000)

    sent_before = len(mailbox.stats()["deliveries"])
    mailbox.post("burst", json={"count": 200})
    eventually(lambda: len(mailbox.stats()["deliveries"]) >= sent_before + 200, timeout_s=60)
    mailbox.faults()
    after = _idle(engine, store_id)

    assert 1 <= after - before <= 2
    assert local_copy(engine, store_id) == mailbox_copy(mailbox, provider)
