"""Resolving alerts, and announcing each resolution to its business as ``alert.resolved``.

``resolve_open`` closes open alerts inside the caller's transaction (``UPDATE ... WHERE status
= 'open' RETURNING``: a row is closed once, however many processes resolve it at the same
time); ``announce_resolved`` logs each and publishes a business's alert once the caller's
transaction has committed. The publisher is passed in (the task side's ``announce``): the
safeguards know no tasks.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.orm import Session

from models import Alert, AlertSeverity, AlertStatus

__all__ = [
    "ALERT_RESOLVED_EVENT",
    "Publisher",
    "ResolvedAlert",
    "announce_resolved",
    "resolve_open",
]

log = logging.getLogger(__name__)

#: Called as (business_id, event_type, data) for each alert event of a business.
Publisher = Callable[[uuid.UUID, str, dict[str, Any]], object]
#: The outbound event announcing that an open alert was resolved (its condition cleared).
ALERT_RESOLVED_EVENT = "alert.resolved"


@dataclass(frozen=True)
class ResolvedAlert:
    """An alert a resolution closed: what ``alert.resolved`` tells its business."""

    id: uuid.UUID
    dedup_key: str
    business_id: uuid.UUID | None
    store_id: uuid.UUID | None
    rule: str
    severity: AlertSeverity
    message: str
    details: dict[str, Any]
    raised_at: datetime
    resolved_at: datetime


def resolve_open(session: Session, *where: Any) -> list[ResolvedAlert]:
    """Resolve the open alerts matching ``where`` in ``session``'s transaction; those closed.

    The caller announces them with ``announce_resolved`` once its transaction has committed.
    """
    statement = (
        update(Alert)
        .where(Alert.status == AlertStatus.OPEN, *where)
        .values(status=AlertStatus.RESOLVED, resolved_at=func.now(), updated_at=func.now())
        .returning(
            Alert.id,
            Alert.dedup_key,
            Alert.business_id,
            Alert.store_id,
            Alert.rule,
            Alert.severity,
            Alert.message,
            Alert.details,
            Alert.raised_at,
            Alert.resolved_at,
        )
    )
    return [ResolvedAlert(**row._asdict()) for row in session.execute(statement)]


def announce_resolved(resolved: Iterable[ResolvedAlert], publish: Publisher | None) -> None:
    """Log each resolved alert; publish a business's as ``alert.resolved`` (never raising)."""
    for alert in resolved:
        log.info("alert %s resolved: its condition cleared", alert.dedup_key)
        if publish is None or alert.business_id is None:
            continue  # a system-wide alert is for operators: logged, never sent to a tenant
        data = {
            "alert_id": str(alert.id),
            "rule": str(alert.rule),
            "severity": alert.severity.value,
            "dedup_key": alert.dedup_key,
            "message": alert.message,
            "store_id": str(alert.store_id) if alert.store_id else None,
            "details": alert.details,
            "raised_at": alert.raised_at.isoformat(),
            "resolved_at": alert.resolved_at.isoformat(),
        }
        try:
            publish(alert.business_id, ALERT_RESOLVED_EVENT, data)
        except Exception:  # the alert is resolved; one failed announcement must not stop others
            log.exception("alert %s: could not publish %s", alert.dedup_key, ALERT_RESOLVED_EVENT)
