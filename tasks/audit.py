"""The accounting check behind ``syncguard audit``: nothing lost, nothing stuck.

Two checks, each a list of violations (empty when the promise holds) and counts to print:

- **Jobs** (PostgreSQL and the broker): every accepted sync job is terminal (succeeded, failed,
  archived) or live. *Live* means running with a live lease in Redis or a page committed
  within ``sync_lease_s``, or queued/deferred with its message in the broker's queue (Redis
  brokers: the queue lists and the unacknowledged set) or its expected start (``eta``) less than
  ``sync_queue_bound_s`` ago. Each bound is widened by one ``sync_recovery_sweep_s``: Beat's
  sweep (tasks/recovery.py) recovers an overdue job within that period, so only a job past it
  is stuck.
- **Mailboxes** (tests, or an operator holding the provider's truth): every message of a
  mailbox is in the local copy (``synced_messages``) exactly once with its labels, and no
  message the mailbox no longer has remains.

Both read with the service role (every tenant); neither writes anything.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from redis import RedisError
from sqlalchemy import func, select

from models import SyncedMessage, SyncJob, SyncJobStatus
from safeguards.redis_state import connect, get_redis, key
from syncguard.db import service_session
from syncguard.settings import get_settings
from tasks import app
from tasks.queues import QUEUE_NAMES

TERMINAL = frozenset({SyncJobStatus.SUCCEEDED, SyncJobStatus.FAILED, SyncJobStatus.ARCHIVED})


@dataclass(frozen=True)
class Violation:
    """One broken promise: ``kind`` (stuck_job, missing, duplicated, labels, deleted), the
    ``subject`` (a job or store id) and a human ``detail``."""

    kind: str
    subject: str
    detail: str


@dataclass
class Audit:
    """Counts by name (printed as a table) and the violations found."""

    counts: Counter[str] = field(default_factory=Counter)
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is lost or stuck."""
        return not self.violations

    def merge(self, other: Audit) -> Audit:
        """Both audits' counts and violations."""
        return Audit(self.counts + other.counts, [*self.violations, *other.violations])


def audit_jobs(store_ids: Iterable[uuid.UUID] | None = None) -> Audit:
    """Every unfinished sync job (of ``store_ids``, or of all stores) checked for liveness.

    Counts: ``jobs`` (all), ``terminal``, ``live`` and ``stuck``. A broker that cannot be
    listed (RabbitMQ: reading a queue consumes it) leaves the time bounds to decide.
    Raises SQLAlchemyError when PostgreSQL cannot be read.
    """
    settings = get_settings()
    grace = timedelta(seconds=settings.sync_recovery_sweep_s)
    lease = timedelta(seconds=settings.sync_lease_s) + grace
    bound = timedelta(seconds=settings.sync_queue_bound_s) + grace
    stmt = select(SyncJob.status, func.count()).group_by(SyncJob.status)
    open_stmt = select(SyncJob).where(SyncJob.status.not_in(TERMINAL))
    if store_ids is not None:
        ids = list(store_ids)
        stmt = stmt.where(SyncJob.store_id.in_(ids))
        open_stmt = open_stmt.where(SyncJob.store_id.in_(ids))
    audit = Audit()
    with service_session() as session:
        now: datetime = session.execute(select(func.now())).scalar_one()
        for status, count in session.execute(stmt).all():
            audit.counts["jobs"] += count
            audit.counts["terminal"] += count if status in TERMINAL else 0
        unfinished = list(session.scalars(open_stmt))
    in_broker = broker_task_ids() if unfinished else set()
    for job in unfinished:
        reason = _why_stuck(job, now, lease, bound, in_broker)
        if reason is None:
            audit.counts["live"] += 1
            continue
        audit.counts["stuck"] += 1
        audit.violations.append(Violation("stuck_job", str(job.id), reason))
    return audit


def _why_stuck(
    job: SyncJob, now: datetime, lease: timedelta, bound: timedelta, in_broker: set[str] | None
) -> str | None:
    """None for a live job, else what makes it stuck."""
    if job.status is SyncJobStatus.RUNNING:
        if now - job.updated_at <= lease or _lease_holder(job.store_id) == str(job.id):
            return None
        quiet = (now - job.updated_at).total_seconds()
        return f"running, no page for {quiet:.0f}s and no live lease (store {job.store_id})"
    if in_broker and job.celery_task_id in in_broker:
        return None
    expected = job.eta or job.updated_at
    if now - expected <= bound:
        return None
    late = (now - expected).total_seconds()
    where = "not in the broker" if in_broker is not None else "broker not listable"
    return f"{job.status.value} {late:.0f}s past its start, {where} (store {job.store_id})"


def _lease_holder(store_id: uuid.UUID) -> str | None:
    """The job id holding the store's sync lease, or None (also when Redis cannot say)."""
    try:
        holder = get_redis().get(key("sync", str(store_id), "lease"))
    except RedisError:
        return None
    token = holder.decode() if isinstance(holder, bytes) else holder
    # The lease names ``<job id>/<task id>`` (tasks/sync/lease.py).
    return token.split("/")[0] if isinstance(token, str) else None


def broker_task_ids() -> set[str] | None:
    """Task ids of every message a Redis broker holds (queued, or delivered and unacked).

    None when the broker is not Redis (standalone or Sentinel) or cannot be read (AMQP queues
    cannot be listed without consuming them). Reads kombu's layout: one list per queue (and per
    priority, the queue name plus kombu's separator) and the ``unacked`` hash, under
    ``global_keyprefix``.
    """
    url = str(app.conf.broker_url)
    if not url.startswith(("redis://", "rediss://", "sentinel://")):
        return None
    prefix = str((app.conf.broker_transport_options or {}).get("global_keyprefix", ""))
    ids: set[str] = set()
    try:
        client = connect(url)  # a Sentinel broker: its current primary
        for queue in QUEUE_NAMES:
            for name in client.scan_iter(match=f"{prefix}{queue}*", count=500):
                for raw in client.lrange(name, 0, -1):
                    ids.update(_task_id(raw))
        for raw in client.hvals(f"{prefix}unacked"):
            ids.update(_task_id(raw))
    except RedisError:
        return None
    return ids


def _task_id(raw: bytes | str) -> list[str]:
    """The task id of a kombu entry (a message, or ``[message, exchange, key]`` when unacked)."""
    try:
        entry = json.loads(raw)
    except ValueError:
        return []
    message = entry[0] if isinstance(entry, list) and entry else entry
    headers = message.get("headers") if isinstance(message, dict) else None
    task_id = headers.get("id") if isinstance(headers, dict) else None
    return [task_id] if isinstance(task_id, str) else []


def audit_mailboxes(truth: Mapping[uuid.UUID, Mapping[str, set[str]]]) -> Audit:
    """Each store's local copy against its mailbox, given as {store id: {message id: labels}}.

    ``labels`` are as the local copy should hold them (tests/sync_support ``mailbox_copy``).
    Counts: ``mailboxes``, ``messages`` (in the truth), ``copied`` (rows checked), and one per
    violation kind: ``missing``, ``duplicated``, ``labels``, ``deleted``.
    """
    audit = Audit()
    with service_session() as session:
        for store_id, messages in truth.items():
            rows = session.execute(
                select(SyncedMessage.provider_message_id, SyncedMessage.labels).where(
                    SyncedMessage.store_id == store_id
                )
            ).all()
            audit.counts["mailboxes"] += 1
            audit.counts["messages"] += len(messages)
            audit.counts["copied"] += len(rows)
            _compare(audit, str(store_id), messages, [(r[0], set(r[1])) for r in rows])
    return audit


def _compare(
    audit: Audit, store: str, truth: Mapping[str, set[str]], rows: list[tuple[str, set[str]]]
) -> None:
    seen = Counter(message_id for message_id, _ in rows)
    local = dict(rows)
    found: list[tuple[str, str]] = []
    found += [("missing", m) for m in truth if m not in local]
    found += [("duplicated", m) for m, n in seen.items() if n > 1]
    found += [("deleted", m) for m in local if m not in truth]
    for message_id, labels in truth.items():
        if message_id in local and local[message_id] != set(labels):
            found.append(("labels", message_id))
    for kind, message_id in found:
        audit.counts[kind] += 1
        detail = f"message {message_id}"
        if kind == "labels":
            detail += f": local {sorted(local[message_id])}, mailbox {sorted(truth[message_id])}"
        audit.violations.append(Violation(kind, store, detail))
