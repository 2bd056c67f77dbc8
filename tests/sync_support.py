"""Stores connected to emulator mailboxes, and how to compare a local copy with its mailbox."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, select

from models import Provider, Store, SyncedMessage, SyncJob, SyncJobStatus
from providers.emulator.runner import EmulatorHandle
from providers.emulator.state import SYSTEM_LABELS
from syncguard.crypto import encrypt_json
from syncguard.db import service_session
from tests.factories import make_business
from tests.providers import Mailbox

FINAL = {SyncJobStatus.SUCCEEDED, SyncJobStatus.FAILED, SyncJobStatus.ARCHIVED}


def emulator_env(emulator: EmulatorHandle) -> dict[str, str]:
    """Settings that point a worker's adapters at the emulator."""
    return {
        "SYNCGUARD_GMAIL_API_URL": emulator.url,
        "SYNCGUARD_GMAIL_TOKEN_URL": f"{emulator.url}/oauth2/token",
        "SYNCGUARD_GRAPH_API_URL": emulator.url,
        "SYNCGUARD_GRAPH_TOKEN_URL": f"{emulator.url}/oauth2/token",
    }


def connect_store(
    engine: Engine,
    emulator: EmulatorHandle,
    provider: Provider,
    business_id: uuid.UUID | None = None,
) -> tuple[uuid.UUID, Mailbox]:
    """A store (of a new business unless given) whose mailbox lives in the emulator."""
    address = f"shop-{uuid.uuid4().hex[:8]}@example.com"
    mailbox = Mailbox(emulator, provider.value, address)
    with service_session(engine) as session:
        store = Store(
            business_id=business_id or make_business(session).id,
            provider=provider,
            mailbox_address=address,
            credentials_encrypted=encrypt_json(mailbox.credentials.to_dict()),
        )
        session.add(store)
        session.flush()
        return store.id, mailbox


def expected_labels(provider: Provider, labels: list[str]) -> set[str]:
    """What the local copy holds for a mailbox message's labels (Graph has categories)."""
    if provider is Provider.GMAIL:
        return set(labels)
    return {label for label in labels if label not in SYSTEM_LABELS} | (
        {"UNREAD"} if "UNREAD" in labels else set()
    )


def mailbox_copy(mailbox: Mailbox, provider: Provider) -> dict[str, set[str]]:
    """The emulator's mailbox as {message id: labels}, as the local copy should hold it."""
    visible = [m for m in mailbox.state()["messages"] if not {"SPAM", "TRASH"} & set(m["labels"])]
    return {m["id"]: expected_labels(provider, m["labels"]) for m in visible}


def local_copy(engine: Engine, store_id: uuid.UUID) -> dict[str, set[str]]:
    """The synced messages of a store as {provider message id: labels}."""
    with service_session(engine) as session:
        rows = session.execute(
            select(SyncedMessage.provider_message_id, SyncedMessage.labels).where(
                SyncedMessage.store_id == store_id
            )
        ).all()
    return {row[0]: set(row[1]) for row in rows}


def wait_for_job(engine: Engine, job_id: uuid.UUID, timeout_s: float = 60.0) -> SyncJob:
    """The job once it reached a final state."""
    return eventually(lambda: _final(engine, job_id), timeout_s)


def _final(engine: Engine, job_id: uuid.UUID) -> SyncJob | None:
    with service_session(engine) as session:
        job = session.get(SyncJob, job_id)
        return job if job is not None and job.status in FINAL else None


def jobs_of(engine: Engine, store_id: uuid.UUID) -> list[SyncJob]:
    """Every sync job of a store, oldest first."""
    with service_session(engine) as session:
        stmt = select(SyncJob).where(SyncJob.store_id == store_id).order_by(SyncJob.created_at)
        return list(session.scalars(stmt))


def eventually(check: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout_s}s")
