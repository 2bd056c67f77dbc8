"""Announcing events to tenants' endpoints from inside tasks, without ever failing the task."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from models import MetricType
from safeguards.health_metrics.recorder import record_metric
from tasks.outbound.delivery import publish_event

log = logging.getLogger(__name__)


def announce(business_id: uuid.UUID, event_type: str, data: dict[str, Any]) -> None:
    """Publish ``event_type``; a failure is logged and counted, the caller's work stands."""
    try:
        publish_event(business_id, event_type, data)
    except Exception:  # the sync or archive already happened; the event is best effort
        log.exception("could not publish %s for business %s", event_type, business_id)
        record_metric(MetricType.ERRORS, "event_publish_failed", 1.0, tags={"event": event_type})
