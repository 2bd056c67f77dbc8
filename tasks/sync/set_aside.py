"""Messages that cannot be synced: set aside in the dead-letter archive while their page commits.

One bad message must never block its mailbox: whether the database refused its row, or the
provider refused to serve it on its own (a Gmail 400 on its ``messages.get``) or served it without
a required field (``providers.base.UnreadableItem``). Each is logged with its store and
message id, counted (``syncguard_rows_set_aside_total``) and archived with category
``validation`` in the page's own transaction, so the entry exists exactly when the page (and the
cursor past it) committed. The entry's job is a sync of the store: once the cause is fixed,
``syncguard dlq replay`` runs one; a full sync re-reads the message (an incremental one only
when the message changes again). A redelivered page finds its entry already there (one entry per
store and message), so the archive does not grow with retries.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Sequence

from sqlalchemy.orm import Session

from models import FailureCategory
from providers.base import UnreadableItem
from safeguards.dead_letter.archive import move_to_dead_letter_queue
from safeguards.health_metrics.prometheus import count_set_aside
from safeguards.storable import storable_text
from tasks.events import announce
from tasks.queues import SYNC
from tasks.sync.mailbox_copy import RefusedRow

log = logging.getLogger(__name__)

#: The task an entry replays: a sync of the message's store.
SYNC_TASK = "tasks.sync.sync_store"
_TABLE = "synced_messages"


def set_aside_job_id(store_id: uuid.UUID, provider_message_id: str) -> str:
    """The archive job id of a refused message: stable, so one entry per store and message."""
    digest = hashlib.sha256(storable_text(provider_message_id).encode("utf-8")).hexdigest()[:32]
    return f"set-aside:{store_id}:{digest}"


def announce_set_aside(business_id: uuid.UUID, entry_ids: Sequence[uuid.UUID]) -> None:
    """Tell the business about each new entry, as any archived job is (after the commit)."""
    for entry_id in entry_ids:
        announce(
            business_id,
            "dead_letter.added",
            {"entry_id": str(entry_id), "category": "validation", "job_type": SYNC_TASK},
        )


def set_aside(
    session: Session,
    store_id: uuid.UUID,
    sync_job_id: uuid.UUID,
    refused: Sequence[RefusedRow],
    unreadable: Sequence[UnreadableItem] = (),
) -> list[uuid.UUID]:
    """Log, count and archive each refused or unreadable message in ``session``; returns the
    entry ids."""
    entries = []
    rows: list[tuple[RefusedRow | UnreadableItem, str]]
    rows = [(row, "refused by the database") for row in refused]
    rows += [(item, "unreadable from the provider") for item in unreadable]
    for row, why in rows:
        log.error(
            "store %s message %r set aside, %s: %s: %s",
            store_id,
            row.provider_message_id,
            why,
            row.error,
            row.reason,
        )
        count_set_aside(_TABLE, row.error)
        detail = {
            "table": _TABLE,
            "provider_message_id": row.provider_message_id,
            "sync_job_id": str(sync_job_id),
            "error": row.error,
        }
        entries.append(
            move_to_dead_letter_queue(
                set_aside_job_id(store_id, row.provider_message_id),
                SYNC_TASK,
                f"message {row.provider_message_id!r} {why}: {row.error}: {row.reason}",
                0,
                {
                    "task": SYNC_TASK,
                    "args": [str(store_id)],
                    "kwargs": {},
                    "options": {"queue": SYNC},
                    "set_aside": detail,
                },
                failure_category=FailureCategory.VALIDATION,
                error_context={
                    **detail,
                    "exception_type": row.error,
                    "exception_message": row.reason,
                },
                store_id=store_id,
                session=session,
            )
        )
    return entries
