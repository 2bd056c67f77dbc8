"""request_sync: one rule for every caller — only an active store is synced."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Engine, func, select, update

from models import Store, StoreStatus, SyncJob
from safeguards.errors import ValidationFailure
from syncguard.db import service_session
from tasks.sync.jobs import StoreNotSyncable
from tasks.sync.requests import request_sync, sync_flight
from tests.factories import make_business, make_store
from tests.worker import purge_queues


@pytest.fixture
def paused_store(engine: Engine) -> uuid.UUID:
    with service_session(engine) as session:
        store = make_store(session, make_business(session))
        store.status, store.status_reason = StoreStatus.PAUSED, "connect it first"
        return store.id


def _jobs(store_id: uuid.UUID) -> int:
    with service_session() as session:
        return session.scalar(select(func.count()).where(SyncJob.store_id == store_id)) or 0


def test_a_paused_store_is_refused_with_its_reason_and_nothing_is_queued(
    paused_store: uuid.UUID,
) -> None:
    with pytest.raises(StoreNotSyncable, match="is paused: connect it first; not syncing it"):
        request_sync(paused_store)
    assert _jobs(paused_store) == 0
    # The refusal leaves no pending marker behind that would fold the next request into nothing
    assert sync_flight().request(str(paused_store)) is True
    sync_flight().cancel(str(paused_store))


def test_once_active_the_same_store_is_synced(paused_store: uuid.UUID) -> None:
    with pytest.raises(StoreNotSyncable):
        request_sync(paused_store)
    with service_session() as session:
        session.execute(
            update(Store).where(Store.id == paused_store).values(status=StoreStatus.ACTIVE)
        )
    try:
        assert request_sync(paused_store) is not None
        assert _jobs(paused_store) == 1
    finally:
        sync_flight().cancel(str(paused_store))
        purge_queues()


def test_an_unknown_store_is_refused(engine: Engine) -> None:
    with pytest.raises(ValidationFailure, match="does not exist"):
        request_sync(uuid.uuid4())
