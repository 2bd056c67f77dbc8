"""Announcing an outbound endpoint's recovery: ``endpoint.recovered`` and ``alert.resolved``.

Called after the attempt's transaction committed (``endpoints.record_attempt`` found the
recovery), best effort: the delivery itself succeeded and stands whatever happens here; a
failed announcement is logged and counted.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from models import MetricType
from safeguards.alerts.resolution import Publisher, announce_resolved
from safeguards.health_metrics.recorder import record_metric
from tasks.outbound.endpoints import Endpoint, Recovery

__all__ = ["ENDPOINT_RECOVERED_EVENT", "announce_recovery"]

log = logging.getLogger(__name__)

#: The outbound event announcing that a disabled or failing endpoint succeeded again.
ENDPOINT_RECOVERED_EVENT = "endpoint.recovered"


def announce_recovery(endpoint: Endpoint, recovery: Recovery, publish: Publisher) -> None:
    """Publish ``endpoint.recovered`` (shape: endpoint id, failures before, whether it had been
    disabled, alerts resolved, when) and each resolved alert's ``alert.resolved``."""
    log.info(
        "webhook endpoint %s recovered after %d failures%s",
        endpoint.id,
        recovery.failures,
        " (it had been disabled)" if recovery.was_disabled else "",
    )
    data = {
        "endpoint_id": str(endpoint.id),
        "failures": recovery.failures,
        "was_disabled": recovery.was_disabled,
        "resolved_alert_ids": [str(alert.id) for alert in recovery.resolved],
        "recovered_at": datetime.now(UTC).isoformat(),
    }
    try:
        publish(endpoint.business_id, ENDPOINT_RECOVERED_EVENT, data)
    except Exception:  # the delivery succeeded; the announcement is best effort
        log.exception("endpoint %s: could not publish %s", endpoint.id, ENDPOINT_RECOVERED_EVENT)
        tags = {"event": ENDPOINT_RECOVERED_EVENT}
        record_metric(MetricType.ERRORS, "event_publish_failed", 1.0, tags=tags)
    announce_resolved(recovery.resolved, publish)
