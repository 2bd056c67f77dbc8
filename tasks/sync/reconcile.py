"""Reconciliation: Beat requests a sync of every active, connected store periodically.

Notifications are only a hint: a dropped or never-sent one is covered by the next reconciliation,
so a missed notification never means a missed message.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select

from models import Store, StoreStatus, SyncTrigger
from syncguard.db import service_session
from tasks import app
from tasks.sync.jobs import StoreNotSyncable
from tasks.sync.requests import request_sync


@app.task(name="tasks.webhooks.reconcile_stores")  # type: ignore[untyped-decorator]
def reconcile_stores() -> int:
    """Request a reconciliation sync of every active, connected store; returns how many."""
    with service_session() as session:
        store_ids = list(
            session.scalars(
                select(Store.id).where(
                    Store.status == StoreStatus.ACTIVE, Store.credentials_encrypted.is_not(None)
                )
            )
        )
    # Coalescing makes this cheap: a store with a sync queued or running folds the request in.
    return sum(_reconcile(sid) for sid in store_ids)


def _reconcile(store_id: uuid.UUID) -> bool:
    """Request one reconciliation sync; a store paused since it was listed is skipped."""
    try:
        return request_sync(store_id, SyncTrigger.RECONCILIATION) is not None
    except StoreNotSyncable:
        return False


__all__ = ["reconcile_stores"]
