"""Alerts: raise deduplicated, resolve when the condition clears, and evaluate every rule.

An open alert is unique per ``dedup_key`` (a partial unique index on open rows), so raising is
one ``INSERT ... ON CONFLICT ... DO UPDATE``: a new row, or one more occurrence of the open one,
told apart by ``xmax = 0``. Only a new row is logged and published; the caller passes the
publisher (the task side's ``announce``), since safeguards know no tasks. Resolving is the
other direction: each alert a resolution closes is logged and, when it belongs to a business,
published as ``alert.resolved`` once (the ``UPDATE ... WHERE status = 'open'`` closes a row only
once, however many processes resolve it at the same time). The rules themselves
are pure (``safeguards.alerts.rules``); this module reads their inputs and stores their outcome.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import redis
from sqlalchemy import Boolean, Engine, func, literal_column, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models import Alert, AlertSeverity, CircuitState, Store, StoreStatus
from safeguards.alerts.resolution import Publisher, announce_resolved, resolve_open
from safeguards.alerts.rules import (
    AlertRule,
    AlertSpec,
    AlertThresholds,
    CircuitReading,
    DenialSample,
    StoreReading,
    SubscriptionScore,
    backlog_alert,
    circuit_alert,
    denial_step,
    reauth_alert,
    subscription_health_alert,
)
from safeguards.circuit_breaker.states import decode_text
from safeguards.clock import SYSTEM_CLOCK, Clock
from safeguards.redis_state import get_redis, key
from syncguard.db import service_session

log = logging.getLogger(__name__)

#: The outbound event announcing a newly raised alert.
ALERT_RAISED_EVENT = "alert.raised"
#: Alerts upserted per statement.
RAISE_BATCH = 500
#: Seconds the denial baselines live in Redis without an evaluation refreshing them.
DENIAL_BASELINE_TTL_S = 24 * 3600
_DENIAL_KEY_KIND = "alert-denials"
_LOG_LEVELS = {
    AlertSeverity.INFO: logging.INFO,
    AlertSeverity.WARNING: logging.WARNING,
    AlertSeverity.CRITICAL: logging.CRITICAL,
}


@dataclass(frozen=True)
class RaisedAlert:
    """The open alert a raise landed on, and whether this raise created it."""

    id: uuid.UUID
    dedup_key: str
    occurrences: int
    new: bool


@dataclass(frozen=True)
class Evaluation:
    """What one evaluation did: dedup keys newly raised, still firing, and resolved."""

    raised: list[str]
    firing: list[str]
    resolved: list[str]


def store_alerts(session: Session, specs: Sequence[AlertSpec]) -> list[RaisedAlert]:
    """Upsert ``specs`` on the caller's session: new rows, or one more occurrence of open ones."""
    unique = {spec.dedup_key: spec for spec in specs}
    # A stable order of row locks, so two evaluators upserting the same keys cannot deadlock.
    ordered = [unique[k] for k in sorted(unique)]
    stored: list[RaisedAlert] = []
    for start in range(0, len(ordered), RAISE_BATCH):
        stored += _upsert(session, ordered[start : start + RAISE_BATCH])
    return stored


def _upsert(session: Session, specs: Sequence[AlertSpec]) -> list[RaisedAlert]:
    statement = insert(Alert).values(
        [
            {
                "business_id": s.business_id,
                "store_id": s.store_id,
                "rule": s.rule.value,
                "severity": s.severity,
                "dedup_key": s.dedup_key,
                "message": s.message,
                "details": s.details,
            }
            for s in specs
        ]
    )
    upsert = statement.on_conflict_do_update(
        index_elements=[Alert.dedup_key],
        # The literal predicate, so PostgreSQL infers the partial unique index on open alerts.
        index_where=text("status = 'open'"),
        set_={
            "occurrences": Alert.occurrences + 1,
            "last_seen_at": func.now(),
            "severity": statement.excluded.severity,
            "message": statement.excluded.message,
            "details": statement.excluded.details,
            "updated_at": func.now(),
        },
    ).returning(
        Alert.id,
        Alert.dedup_key,
        Alert.occurrences,
        literal_column("xmax = 0", Boolean).label("inserted"),
    )
    return [RaisedAlert(*row) for row in session.execute(upsert)]


def raise_alerts(
    specs: Sequence[AlertSpec], *, publish: Publisher | None = None, engine: Engine | None = None
) -> list[RaisedAlert]:
    """Raise ``specs`` in one transaction; after it commits, log and publish the new ones."""
    if not specs:
        return []
    with service_session(engine) as session:
        stored = store_alerts(session, specs)
    by_key = {spec.dedup_key: spec for spec in specs}
    for alert in stored:
        if alert.new:
            _announce(by_key[alert.dedup_key], alert, publish)
    return stored


def raise_alert(
    spec: AlertSpec, *, publish: Publisher | None = None, engine: Engine | None = None
) -> RaisedAlert:
    """Raise one alert: deduplicated while open; new ones are logged and published."""
    [stored] = raise_alerts([spec], publish=publish, engine=engine)
    return stored


def _announce(spec: AlertSpec, alert: RaisedAlert, publish: Publisher | None) -> None:
    log.log(_LOG_LEVELS[spec.severity], "alert %s raised: %s", spec.dedup_key, spec.message)
    if publish is None or spec.business_id is None:
        return  # a system-wide alert is for operators: logged, never sent to a tenant
    data = {
        "alert_id": str(alert.id),
        "rule": spec.rule.value,
        "severity": spec.severity.value,
        "dedup_key": spec.dedup_key,
        "message": spec.message,
        "store_id": str(spec.store_id) if spec.store_id else None,
        "details": spec.details,
    }
    try:
        publish(spec.business_id, ALERT_RAISED_EVENT, data)
    except Exception:  # the alert is stored; one failed announcement must not stop the others
        log.exception("alert %s: could not publish %s", spec.dedup_key, ALERT_RAISED_EVENT)


def resolve_alert(
    dedup_key: str, *, publish: Publisher | None = None, engine: Engine | None = None
) -> uuid.UUID | None:
    """Resolve the open alert of ``dedup_key``; returns its id, or None if none was open.

    After the transaction commits, a business's alert is published as ``alert.resolved``.
    """
    with service_session(engine) as session:
        resolved = resolve_open(session, Alert.dedup_key == dedup_key)
    announce_resolved(resolved, publish)
    return resolved[0].id if resolved else None


def resolve_absent(
    rules: Collection[AlertRule],
    keep: Collection[str],
    seen_before: datetime,
    *,
    publish: Publisher | None = None,
    engine: Engine | None = None,
) -> list[str]:
    """Resolve open alerts of ``rules`` not in ``keep`` and not seen since ``seen_before``."""
    if not rules:
        return []
    with service_session(engine) as session:
        resolved = resolve_open(
            session,
            Alert.rule.in_([r.value for r in rules]),
            Alert.dedup_key.not_in(list(keep)),
            # Raised meanwhile (a circuit listener in another process): not ours to resolve.
            Alert.last_seen_at < seen_before,
        )
    announce_resolved(resolved, publish)
    return sorted(alert.dedup_key for alert in resolved)


def store_business(store_id: uuid.UUID, *, engine: Engine | None = None) -> uuid.UUID | None:
    """The business owning ``store_id``, or None for an unknown store."""
    with service_session(engine) as session:
        business: uuid.UUID | None = session.scalar(
            select(Store.business_id).where(Store.id == store_id)
        )
        return business


_LATEST_HEALTH = text("""
SELECT s.business_id, s.store_id, s.id, h.health_score, h.failure_patterns
FROM webhook_subscriptions s
CROSS JOIN LATERAL (
    SELECT health_score, failure_patterns FROM webhook_health_log
    WHERE subscription_id = s.id ORDER BY checked_at DESC LIMIT 1
) h
WHERE s.status <> 'removed'
""")
# Business-wide circuits (outbound endpoints) are left out: their alert would be announced to
# the very endpoints failing, and ``endpoint_disabled`` already covers a sustained failure.
_UNCLOSED_CIRCUITS = text("""
SELECT business_id, store_id, circuit_name, state, trip_count, last_failure_reason
FROM circuit_breaker_state WHERE store_id IS NOT NULL AND state <> 'closed'
""")
_REAUTH_STORES = text(
    "SELECT business_id, id, status, status_reason FROM stores WHERE status = 'needs_reauth'"
)
_BACKLOG = text(
    "SELECT business_id, count(*) FROM failed_job_archive WHERE NOT reviewed GROUP BY business_id"
)
_DENIALS = text(
    "SELECT business_id, store_id, sum(denied_count) FROM provider_rate_limits "
    "GROUP BY business_id, store_id"
)


def table_alerts(session: Session, thresholds: AlertThresholds) -> list[AlertSpec]:
    """The alerts that the tables (health, circuits, stores, dead letters) say should be open."""
    specs: list[AlertSpec | None] = []
    for b, st, sub, score, patterns in session.execute(_LATEST_HEALTH):
        reading = SubscriptionScore(b, st, sub, score, tuple(patterns or ()))
        specs.append(subscription_health_alert(reading, thresholds))
    for b, st, name, state, trips, reason in session.execute(_UNCLOSED_CIRCUITS):
        specs.append(circuit_alert(CircuitReading(b, st, name, CircuitState(state), trips, reason)))
    for b, st, status, reason in session.execute(_REAUTH_STORES):
        specs.append(reauth_alert(StoreReading(b, st, StoreStatus(status), reason)))
    backlog = {business_id: int(count) for business_id, count in session.execute(_BACKLOG)}
    specs += [backlog_alert(b, n, thresholds) for b, n in backlog.items() if b is not None]
    specs.append(backlog_alert(None, sum(backlog.values()), thresholds))
    return [spec for spec in specs if spec is not None]


def denial_alerts(
    counts: Iterable[tuple[uuid.UUID, uuid.UUID, int]],
    thresholds: AlertThresholds,
    *,
    clock: Clock = SYSTEM_CLOCK,
    client: redis.Redis | None = None,
) -> tuple[list[AlertSpec], set[str]]:
    """Rate-limit alerts and held keys, against the baselines kept in Redis between runs."""
    client = client or get_redis()
    baseline_key = key(_DENIAL_KEY_KIND, "all")
    baselines = {
        uuid.UUID(decode_text(k)): _parse_sample(decode_text(v))
        for k, v in client.hgetall(baseline_key).items()
    }
    step = denial_step(counts, baselines, clock.now(), thresholds)
    if step.baselines:
        updates = {str(s): f"{b.denied_count}:{b.at_s!r}" for s, b in step.baselines.items()}
        with client.pipeline() as pipe:
            pipe.hset(baseline_key, mapping=updates)  # type: ignore[arg-type]
            pipe.expire(baseline_key, DENIAL_BASELINE_TTL_S)
            pipe.execute()
    return step.firing, step.held


def _parse_sample(raw: str) -> DenialSample:
    count, at_s = raw.split(":")
    return DenialSample(int(count), float(at_s))


def evaluate(
    thresholds: AlertThresholds,
    *,
    publish: Publisher | None = None,
    clock: Clock = SYSTEM_CLOCK,
    client: redis.Redis | None = None,
    engine: Engine | None = None,
) -> Evaluation:
    """Evaluate every rule: raise what fires, resolve open alerts whose condition cleared."""
    with service_session(engine) as session:
        started_at: datetime = session.execute(select(func.now())).scalar_one()
        firing = table_alerts(session, thresholds)
        denials = [(b, s, int(n)) for b, s, n in session.execute(_DENIALS)]
    evaluated, held = set(AlertRule), set[str]()
    try:
        denied, held = denial_alerts(denials, thresholds, clock=clock, client=client)
        firing += denied
    except redis.RedisError:
        # Without the baselines no rate is known: leave the denial alerts as they are.
        log.warning("alert evaluation: denial baselines unreachable", exc_info=True)
        evaluated.discard(AlertRule.RATE_LIMIT_DENIALS)
    stored = raise_alerts(firing, publish=publish, engine=engine)
    keep = held | {spec.dedup_key for spec in firing}
    resolved = resolve_absent(evaluated, keep, started_at, publish=publish, engine=engine)
    return Evaluation(
        raised=sorted(a.dedup_key for a in stored if a.new),
        firing=sorted(a.dedup_key for a in stored),
        resolved=resolved,
    )
