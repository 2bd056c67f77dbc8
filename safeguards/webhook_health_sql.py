"""Webhook health scored in SQL: one statement reads, scores and logs a chunk of subscriptions.

The same definition as ``webhook_health.assess`` (the reference, and what tests compare this
with on the same rows): ``score = delivery * expiry * renewal``, the five named patterns and the
``details`` of ``webhook_health.record_health_chunk``'s rows. Beat's health check used to fetch
every input into Python, score there and send the readings back (two round trips of a chunk's
rows and a Python object per subscription); here the database does it in one
``INSERT ... SELECT`` and returns only the count and the subscriptions below the renewal
threshold, the only ones that need action.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from models import Provider
from safeguards.webhook_health import (
    CHUNK,
    CONSECUTIVE_FAILURES,
    DELIVERY_PRIOR,
    EXPIRING_WITHOUT_RENEWAL,
    RENEWAL_FAILING,
    RENEWAL_FAILURE_FACTOR,
    REPEATED_ERROR,
    SILENT_SUBSCRIPTION,
    inputs_sql,
    thresholds_for,
)
from syncguard.settings import Settings, get_settings

# Seconds as float8 (extract gives numeric), and the inputs ``_inputs_of`` derives in Python.
_DERIVED = """
SELECT i.*,
       extract(epoch FROM i.expires_at - :now)::float8 AS ste,
       extract(epoch FROM :now - coalesce(i.last_renewed_at, i.created_at))::float8
           AS since_renewal,
       coalesce(greatest(i.last_notification_at, i.last_delivery), i.created_at) AS reference,
       CASE WHEN i.provider = 'gmail' THEN :gmail_horizon ELSE :graph_horizon END AS horizon,
       -- the newest failures in a row: failures before the first success (newest first)
       coalesce(array_position(i.outcomes, true) - 1, cardinality(i.outcomes), 0) AS failing_run,
       m.top_error, coalesce(m.top_count, 0) AS top_count
FROM inputs i
LEFT JOIN LATERAL (
    -- Counter.most_common: the highest count, ties to the message seen first (newest)
    SELECT e.msg AS top_error, count(*) AS top_count
    FROM unnest(i.errors) WITH ORDINALITY AS e(msg, n)
    WHERE e.msg <> ''
    GROUP BY e.msg ORDER BY count(*) DESC, min(e.n) LIMIT 1
) m ON true
"""

_COMPONENTS = """
SELECT d.*,
       (greatest(0, d.total - d.failed) + :prior)::float8 / (greatest(d.total, 0) + :prior)
           AS c_delivery,
       CASE WHEN d.ste IS NULL OR d.ste <= 0 THEN 0.0
            WHEN d.horizon <= 0 THEN 1.0
            ELSE least(1.0, d.ste / d.horizon) END AS c_expiry,
       power(:factor, greatest(0, d.consecutive_renewal_failures))::float8 AS c_renewal,
       extract(epoch FROM :now - d.reference)::float8 AS since_notification,
       coalesce(d.last_change > d.reference, false) AS changed
FROM derived d
"""

_INSERT = """
WITH inputs AS ({inputs}),
derived AS ({derived}),
scored AS ({components}),
logged AS (
    INSERT INTO webhook_health_log (business_id, store_id, subscription_id, health_score,
        success_rate, deliveries_total, deliveries_failed, seconds_to_expiry, renewal_failures,
        failure_patterns, details, checked_at)
    SELECT c.business_id, c.store_id, c.id,
           least(1.0, greatest(0.0, c.c_delivery * c.c_expiry * c.c_renewal)),
           CASE WHEN c.total > 0 THEN (c.total - c.failed)::float8 / c.total END,
           c.total, c.failed, trunc(c.ste)::int, c.consecutive_renewal_failures,
           array_remove(ARRAY[
               CASE WHEN :consecutive > 0 AND c.failing_run >= :consecutive
                    THEN '{consecutive_failures}' END,
               CASE WHEN :repeated > 0 AND c.top_count >= :repeated
                    THEN '{repeated_error}' END,
               CASE WHEN c.ste <= :expiring_within AND c.since_renewal > :renewal_stale
                    THEN '{expiring}' END,
               CASE WHEN c.since_notification > :silent_after AND c.changed
                    THEN '{silent}' END,
               CASE WHEN c.consecutive_renewal_failures >= :renewal_failures
                    THEN '{renewal_failing}' END
           ]::text[], NULL),
           jsonb_build_object(
               'components', jsonb_build_object(
                   'delivery', c.c_delivery, 'expiry', c.c_expiry, 'renewal', c.c_renewal),
               'inputs', jsonb_build_object(
                   'deliveries_total', c.total, 'deliveries_failed', c.failed,
                   'seconds_to_expiry', c.ste,
                   'renewal_failures', c.consecutive_renewal_failures,
                   'seconds_since_renewal', c.since_renewal,
                   'seconds_since_notification', c.since_notification,
                   'mailbox_changed_since_notification', c.changed),
               'most_common_error', c.top_error,
               'status', c.status),
           :now
    FROM scored c
    RETURNING subscription_id, health_score
)
SELECT count(*) AS checked,
       coalesce(array_agg(subscription_id ORDER BY subscription_id)
                FILTER (WHERE health_score < :renew_below), '{{}}') AS unhealthy
FROM logged
"""

_STATEMENT = text(
    _INSERT.format(
        inputs=inputs_sql("s.id > :after AND s.id <= :last"),
        derived=_DERIVED,
        components=_COMPONENTS,
        consecutive_failures=CONSECUTIVE_FAILURES,
        repeated_error=REPEATED_ERROR,
        expiring=EXPIRING_WITHOUT_RENEWAL,
        silent=SILENT_SUBSCRIPTION,
        renewal_failing=RENEWAL_FAILING,
    )
)


@dataclass(frozen=True)
class ChunkOutcome:
    """What one chunk's statement did."""

    #: Readings logged (live subscriptions in the range, at most the limit).
    checked: int
    #: Subscriptions scored below ``health_renew_below``, in id order.
    unhealthy: list[uuid.UUID]


def log_health_chunk(
    session: Session,
    now: datetime,
    *,
    after: uuid.UUID,
    last: uuid.UUID,
    limit: int = CHUNK,
    settings: Settings | None = None,
) -> ChunkOutcome:
    """Score the live subscriptions with ``after < id <= last`` (at most ``limit``) as of ``now``
    and append their readings to ``webhook_health_log``, all in one statement (in ``session``'s
    transaction). Same readings as ``webhook_health.record_health_chunk``.

    Raises what the database raises (SQLAlchemyError); nothing is logged then.
    """
    s = settings or get_settings()
    window_s = float(s.health_window_s)
    gmail, graph = thresholds_for(Provider.GMAIL, s), thresholds_for(Provider.OUTLOOK, s)
    # The last-delivery lookup's horizon, as gather_chunk's default.
    horizon_s = 2 * max(window_s, float(s.health_silent_after_s))
    params: dict[str, Any] = {
        "since": now - timedelta(seconds=window_s),
        "horizon": now - timedelta(seconds=horizon_s),
        "now": now,
        "limit": limit,
        "after": after,
        "last": last,
        "gmail_horizon": gmail.expiry_horizon_s,
        "graph_horizon": graph.expiry_horizon_s,
        "prior": DELIVERY_PRIOR,
        "factor": RENEWAL_FAILURE_FACTOR,
        "consecutive": gmail.consecutive_failures,
        "repeated": gmail.repeated_error,
        "expiring_within": gmail.expiring_within_s,
        "renewal_stale": gmail.renewal_stale_s,
        "silent_after": gmail.silent_after_s,
        "renewal_failures": gmail.renewal_failures,
        "renew_below": s.health_renew_below,
    }
    row = session.execute(_STATEMENT, params).one()
    return ChunkOutcome(checked=int(row.checked), unhealthy=list(row.unhealthy))


__all__ = ["ChunkOutcome", "log_health_chunk"]
