"""What every fault test ends on: the ledger settled, the audit clean, and one summary line of
figures (copied into docs/reliability.md) printed with ``-s``."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import Engine, func, select

from models import Provider, SyncJob, SyncJobStatus
from syncguard.db import service_session
from tasks.audit import Audit, audit_jobs, audit_mailboxes
from tests.providers import Mailbox
from tests.reliability.recovery_support import unsettled
from tests.sync_support import eventually, local_copy, mailbox_copy

#: Stores of a fault test: {store id: (its emulator mailbox, its provider)}.
Stores = Mapping[uuid.UUID, tuple[Mailbox, Provider]]


def converged(engine: Engine, stores: Stores) -> bool:
    """Every job of the stores ended, none pending, every local copy equal to its mailbox."""
    if unsettled(engine, list(stores)):
        return False
    return all(local_copy(engine, s) == mailbox_copy(m, p) for s, (m, p) in stores.items())


def in_flight(engine: Engine, job_ids: Sequence[uuid.UUID]) -> bool:
    """Some job of ``job_ids`` committed a page and some waits on a countdown (deferred): the
    moment a fault test breaks a server, polled for instead of slept towards."""
    with service_session(engine) as session:
        rows = session.execute(
            select(SyncJob.pages_processed, SyncJob.status).where(SyncJob.id.in_(job_ids))
        ).all()
    paged = any(pages >= 1 for pages, _ in rows)
    return paged and any(status is SyncJobStatus.DEFERRED for _, status in rows)


def settle(
    engine: Engine, stores: Stores, timeout_s: float, others: Sequence[uuid.UUID] = ()
) -> None:
    """Wait (bounded) until ``converged`` and the jobs of ``others`` (stores whose copy is not
    compared, e.g. ones whose provider always fails) ended; AssertionError says what is not."""

    def done() -> bool:
        return not unsettled(engine, list(others)) and converged(engine, stores)

    try:
        eventually(done, timeout_s)
    except AssertionError:
        left = unsettled(engine, [*stores, *others])[:10]
        copies = audit(stores).violations[:10]
        raise AssertionError(f"not settled: {left}; copies: {copies}") from None


def audit(stores: Stores) -> Audit:
    """The accounting check over the stores: jobs and mailboxes."""
    truth = {s: mailbox_copy(m, p) for s, (m, p) in stores.items()}
    return audit_jobs(list(stores)).merge(audit_mailboxes(truth))


def figures(
    name: str,
    engine: Engine,
    stores: Stores,
    cleared_at: datetime,
    others: Sequence[uuid.UUID] = (),
) -> Audit:
    """Audit the stores and print one line: jobs ran, succeeded, archived, lost (not terminal),
    recovered by the sweep, messages duplicated in the copies, and the longest a store was
    blocked after the fault cleared (its last job's end minus ``cleared_at``, seconds).
    ``others``: stores whose jobs are audited and counted but whose copy is not compared."""
    result = audit(stores).merge(audit_jobs(list(others)))
    ids = [*stores, *others]
    with service_session(engine) as session:
        by_status = dict(
            session.execute(
                select(SyncJob.status, func.count())
                .where(SyncJob.store_id.in_(ids))
                .group_by(SyncJob.status)
            ).all()
        )
        recovered = session.execute(
            select(func.coalesce(func.sum(SyncJob.recoveries), 0)).where(SyncJob.store_id.in_(ids))
        ).scalar_one()
        last_ends = (
            session.execute(
                select(func.max(SyncJob.finished_at))
                .where(SyncJob.store_id.in_(ids))
                .group_by(SyncJob.store_id)
            )
            .scalars()
            .all()
        )
    blocked = max([(end - cleared_at).total_seconds() for end in last_ends if end] or [0.0])
    ran = sum(by_status.values())
    ended = {SyncJobStatus.SUCCEEDED, SyncJobStatus.FAILED, SyncJobStatus.ARCHIVED}
    archived = by_status.get(SyncJobStatus.ARCHIVED, 0) + by_status.get(SyncJobStatus.FAILED, 0)
    lost = ran - sum(n for s, n in by_status.items() if s in ended)
    print(
        f"\n[reliability] {name}: stores={len(ids)} jobs={ran} "
        f"succeeded={by_status.get(SyncJobStatus.SUCCEEDED, 0)} archived={archived} "
        f"lost={lost} recovered={recovered} duplicated={result.counts['duplicated']} "
        f"longest_blocked_s={max(blocked, 0.0):.1f} audit={'ok' if result.ok else 'VIOLATIONS'}"
    )
    return result
