"""A business's outbound endpoints: registration, lookup, and the bookkeeping of each attempt.

An attempt's log row and the endpoint's counters are written in one transaction; an endpoint
that answers 410 Gone, or that keeps failing for long enough, is disabled there too, with one
open ``endpoint_disabled`` alert (the partial unique index on open dedup keys keeps it one).
The other direction in the same transaction: a success after a failing streak (as long as the
one that may disable) or while the endpoint's ``endpoint_disabled`` alert is still open (it was
disabled, then enabled again) is a recovery: the alert is resolved, and the caller announces
``endpoint.recovered`` and ``alert.resolved`` once the transaction has committed.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import ColumnElement, and_, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models import Alert, AlertSeverity, Direction, WebhookDeliveryLog, WebhookEndpoint
from safeguards.alerts.resolution import ResolvedAlert, resolve_open
from safeguards.delivery_log import log_webhook_delivery
from syncguard.crypto import decrypt_json, encrypt_json
from syncguard.db import service_session
from syncguard.settings import get_settings
from tasks.outbound.signing import new_secret, secret_key

log = logging.getLogger(__name__)

#: The events a business can subscribe an endpoint to; an empty subscription means all.
EVENT_TYPES = frozenset(
    {
        "sync.completed",
        "alert.raised",
        "alert.resolved",
        "dead_letter.added",
        "endpoint.recovered",
    }
)
#: Rule of the alert raised when an endpoint is disabled automatically.
ENDPOINT_DISABLED_RULE = "endpoint_disabled"
#: HTTP status by which a receiver says the endpoint is gone for good.
GONE = 410
_URL_SCHEMES = frozenset({"http", "https"})


@dataclass(frozen=True)
class Endpoint:
    """What one delivery needs of its endpoint; the secret is decrypted, never printed."""

    id: uuid.UUID
    business_id: uuid.UUID
    url: str
    enabled: bool
    secret: str = field(repr=False)

    @property
    def circuit_name(self) -> str:
        """The endpoint's own business-wide circuit."""
        return f"endpoint:{self.id}"


@dataclass(frozen=True)
class AttemptOutcome:
    """How one POST ended: a status code, or a transport error (code None)."""

    response_code: int | None
    error_message: str | None
    duration_ms: int
    retry_after_s: float | None = None

    @property
    def success(self) -> bool:
        """Any 2xx is a success."""
        return self.response_code is not None and 200 <= self.response_code < 300

    @property
    def gone(self) -> bool:
        """The receiver said 410 Gone: disable at once, retry nothing."""
        return self.response_code == GONE


@dataclass(frozen=True)
class Recovery:
    """An endpoint that succeeded again: its failure streak before, and the alerts resolved."""

    endpoint_id: uuid.UUID
    failures: int
    was_disabled: bool
    resolved: list[ResolvedAlert]


@dataclass(frozen=True)
class AttemptRecord:
    """What recording an attempt changed: the endpoint disabled now (why), or recovered."""

    disabled_reason: str | None = None
    recovery: Recovery | None = None


def validate_url(url: str) -> str:
    """``url`` if it is an absolute http(s) URL with a host; ValueError otherwise."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in _URL_SCHEMES:
        raise ValueError(f"endpoint URL must be http:// or https://, got scheme {parts.scheme!r}")
    if not parts.hostname:
        raise ValueError("endpoint URL has no host")
    return url.strip()


def validate_event_types(event_types: Iterable[str]) -> list[str]:
    """The event types as a sorted list; ValueError names any unknown one."""
    chosen = sorted(set(event_types))
    unknown = [t for t in chosen if t not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"unknown event type(s) {unknown}; known: {sorted(EVENT_TYPES)}")
    return chosen


def register_endpoint(
    business_id: uuid.UUID,
    url: str,
    event_types: Iterable[str] = (),
    secret: str | None = None,
) -> tuple[uuid.UUID, str]:
    """Add an endpoint; returns its id and its signing secret, shown this once only."""
    checked_url, types = validate_url(url), validate_event_types(event_types)
    secret = secret or new_secret()
    secret_key(secret)  # a caller-supplied secret must be whsec_<base64>
    with service_session() as session:
        endpoint = WebhookEndpoint(
            business_id=business_id,
            url=checked_url,
            event_types=types,
            secret_encrypted=encrypt_json(secret),
        )
        session.add(endpoint)
        session.flush()
        endpoint_id = endpoint.id
    return endpoint_id, secret


def enable_endpoint(endpoint_id: uuid.UUID) -> None:
    """Operator action: enable a disabled endpoint again, its failure streak forgotten."""
    with service_session() as session:
        session.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint_id)
            .values(enabled=True, disabled_reason=None, disabled_at=None, consecutive_failures=0)
        )


def load_endpoint(endpoint_id: uuid.UUID) -> Endpoint | None:
    """The endpoint with its secret decrypted, or None if it was deleted."""
    with service_session() as session:
        row = session.get(WebhookEndpoint, endpoint_id)
        if row is None:
            return None
        return Endpoint(
            row.id, row.business_id, row.url, row.enabled, str(decrypt_json(row.secret_encrypted))
        )


def subscribed(business_id: uuid.UUID, event_type: str) -> ColumnElement[bool]:
    """The predicate on ``webhook_endpoints`` of the business's enabled endpoints that take
    ``event_type`` (or every type); the outbound ledger selects and records them in one go."""
    return and_(
        WebhookEndpoint.business_id == business_id,
        WebhookEndpoint.enabled.is_(True),
        or_(
            func.cardinality(WebhookEndpoint.event_types) == 0,
            WebhookEndpoint.event_types.any_() == event_type,
        ),
    )


def record_attempt(
    endpoint: Endpoint, message_id: str, event_type: str, attempt: int, outcome: AttemptOutcome
) -> AttemptRecord:
    """Log the attempt and update the endpoint: disabled now (and why), or recovered now."""
    with service_session() as session:
        log_webhook_delivery(
            None,
            message_id,
            event_type,
            outcome.success,
            outcome.response_code,
            outcome.error_message,
            outcome.duration_ms,
            direction=Direction.OUTBOUND,
            attempt=attempt,
            endpoint_id=endpoint.id,
            business_id=endpoint.business_id,
            session=session,
        )
        if outcome.success:
            return AttemptRecord(recovery=_mark_success(session, endpoint.id))
        failures = _mark_failure(session, endpoint.id)
        reason = _disable_reason(session, endpoint.id, failures, outcome)
        if reason is not None and _disable(session, endpoint, reason, failures):
            return AttemptRecord(disabled_reason=reason)
        return AttemptRecord()


def _mark_success(session: Session, endpoint_id: uuid.UUID) -> Recovery | None:
    """Reset the streak; a Recovery when the endpoint was failing or disabled until now."""
    # Locked: of two successes at once, only the first sees the streak (one recovery event).
    failures = session.execute(
        select(WebhookEndpoint.consecutive_failures)
        .where(WebhookEndpoint.id == endpoint_id)
        .with_for_update()
    ).scalar_one_or_none()
    session.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id)
        .values(consecutive_failures=0, last_success_at=func.now())
    )
    resolved = resolve_open(session, Alert.dedup_key == disabled_alert_key(endpoint_id))
    failing = (failures or 0) >= get_settings().outbound_disable_after_failures
    if not (failing or resolved):
        return None
    return Recovery(endpoint_id, failures or 0, bool(resolved), resolved)


def disabled_alert_key(endpoint_id: uuid.UUID) -> str:
    """The dedup key of the alert raised when ``endpoint_id`` is disabled."""
    return f"{ENDPOINT_DISABLED_RULE}:{endpoint_id}"


def _mark_failure(session: Session, endpoint_id: uuid.UUID) -> int:
    # One atomic increment: concurrent deliveries to one endpoint all count.
    failures = session.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id)
        .values(
            consecutive_failures=WebhookEndpoint.consecutive_failures + 1,
            last_failure_at=func.now(),
        )
        .returning(WebhookEndpoint.consecutive_failures)
    ).scalar_one_or_none()
    return failures or 0


def _disable_reason(
    session: Session, endpoint_id: uuid.UUID, failures: int, outcome: AttemptOutcome
) -> str | None:
    if outcome.gone:
        return f"the receiver answered {GONE} Gone"
    settings = get_settings()
    if failures < settings.outbound_disable_after_failures:
        return None
    since = _failing_since(session, endpoint_id)
    now = session.execute(select(func.now())).scalar_one()
    if since is None or now - since < timedelta(seconds=settings.outbound_disable_after_s):
        return None
    return f"{failures} failed deliveries in a row since {since.isoformat()}"


def _failing_since(session: Session, endpoint_id: uuid.UUID) -> datetime | None:
    """When the current failure streak began: the first failed attempt after the last success."""
    last_success = select(WebhookEndpoint.last_success_at).where(WebhookEndpoint.id == endpoint_id)
    statement = select(func.min(WebhookDeliveryLog.created_at)).where(
        WebhookDeliveryLog.endpoint_id == endpoint_id,
        WebhookDeliveryLog.direction == Direction.OUTBOUND,
        WebhookDeliveryLog.success.is_(False),
        WebhookDeliveryLog.created_at
        > func.coalesce(last_success.scalar_subquery(), text("'-infinity'::timestamptz")),
    )
    since: datetime | None = session.execute(statement).scalar_one()
    return since


def _disable(session: Session, endpoint: Endpoint, reason: str, failures: int) -> bool:
    """Disable the endpoint and raise its alert, once: False if it was already disabled."""
    disabled = session.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint.id, WebhookEndpoint.enabled.is_(True))
        .values(enabled=False, disabled_reason=reason, disabled_at=func.now())
        .returning(WebhookEndpoint.id)
    ).scalar_one_or_none()
    if disabled is None:
        return False
    session.execute(
        insert(Alert)
        .values(
            business_id=endpoint.business_id,
            rule=ENDPOINT_DISABLED_RULE,
            severity=AlertSeverity.WARNING,
            dedup_key=disabled_alert_key(endpoint.id),
            message=f"webhook endpoint {endpoint.id} disabled: {reason}",
            details={"endpoint_id": str(endpoint.id), "reason": reason, "failures": failures},
        )
        .on_conflict_do_nothing(index_elements=["dedup_key"], index_where=text("status = 'open'"))
    )
    log.warning("webhook endpoint %s disabled: %s", endpoint.id, reason)
    return True
