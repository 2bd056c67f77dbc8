"""Outbound events: signed Standard Webhooks deliveries to each business's endpoints.

``publish_event`` enqueues one ``deliver_event`` per subscribed, enabled endpoint. A delivery
POSTs the same ``webhook-id`` on every attempt, so the receiver can deduplicate; failures are
retried on ``outbound_retry_schedule_s`` (a receiver's longer Retry-After wins), 410 Gone
disables the endpoint at once, and an exhausted schedule lands in the dead-letter archive.

Every message has its ``outbound_messages`` row before it is published, and ends in one terminal
state there (tasks/outbound/ledger.py: the row, not the broker, decides a message must run again).

Long waits are split. Celery holds a message with a countdown unacknowledged inside a worker,
and the broker's visibility timeout only covers ``max_backoff_s`` of that (see celeryconfig), so
no countdown may exceed it. A wait longer than that is re-published as a chain of legs: each
message carries the absolute ``not_before`` time and a countdown of at most ``max_backoff_s``,
and a run that starts before ``not_before`` only re-publishes the rest of the wait.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Task
from sqlalchemy.exc import SQLAlchemyError

from models import FailureCategory, OutboundStatus
from safeguards.backoff import compute_backoff
from safeguards.circuit_breaker.breaker import check_circuit_breaker, record_circuit_breaker_result
from safeguards.dead_letter.archive import move_to_dead_letter_queue
from safeguards.errors import SafeguardUnavailable
from safeguards.redaction import redact
from syncguard.settings import get_settings
from tasks import app
from tasks.outbound import ledger
from tasks.outbound.endpoints import (
    EVENT_TYPES,
    AttemptOutcome,
    Endpoint,
    enable_endpoint,
    load_endpoint,
    record_attempt,
    register_endpoint,
    validate_url,
)
from tasks.outbound.recovered import announce_recovery
from tasks.outbound.schedule import countdown_s, parse_retry_after, retry_delay_s
from tasks.outbound.signing import signature_headers
from tasks.queues import WEBHOOKS

__all__ = [
    "EVENT_TYPES",
    "deliver_event",
    "enable_endpoint",
    "publish_event",
    "register_endpoint",
    "validate_url",
]

log = logging.getLogger(__name__)

TASK_NAME = "tasks.outbound.deliver_event"
#: Retries of a run that failed on our side (database or broker down), not the receiver's.
MAX_INFRASTRUCTURE_RETRIES = 10
_USER_AGENT = "syncguard-webhooks/1"


def publish_event(business_id: uuid.UUID, event_type: str, data: dict[str, Any]) -> list[str]:
    """Record, then enqueue, ``event_type`` to every endpoint that takes it; the message ids.

    The rows commit before any publication (raises SQLAlchemyError if they cannot); a failed
    publication is logged and left to the recovery sweep, which publishes the recorded message.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}; known: {sorted(EVENT_TYPES)}")
    payload = {
        "type": event_type,
        "timestamp": datetime.now(UTC).isoformat(),
        # Events are built from jobs and alerts: mask anything secret-shaped before it leaves.
        "data": redact(data),
    }
    queued = ledger.record(business_id, event_type, payload)
    for message in queued:
        kwargs = {
            "endpoint_id": str(message.endpoint_id),
            "message_id": message.message_id,
            "event_type": event_type,
            "payload": payload,
        }
        try:
            deliver_event.apply_async(kwargs=kwargs, task_id=message.task_id, queue=WEBHOOKS)
        except Exception:  # recorded: the sweep publishes it after the queue bound
            log.exception("publishing outbound message %s failed", message.message_id)
    return [message.message_id for message in queued]


@app.task(name=TASK_NAME, bind=True)  # type: ignore[untyped-decorator]
def deliver_event(
    self: Task,
    endpoint_id: str,
    message_id: str,
    event_type: str,
    payload: dict[str, Any],
    attempt: int = 1,
    not_before: float | None = None,
) -> dict[str, Any]:
    """One delivery attempt of ``message_id`` to the endpoint (or one leg of a wait before it)."""
    job: dict[str, Any] = {
        "endpoint_id": endpoint_id,
        "message_id": message_id,
        "event_type": event_type,
        "payload": payload,
        "attempt": attempt,
    }
    uuid.UUID(endpoint_id)  # malformed input fails (and is archived) before the ledger is read
    try:
        if not ledger.claim(message_id, self.request.id):
            log.info("delivery %s: stale message %s, not run", message_id, self.request.id)
            return {"status": "stale"}
        return _deliver(job, not_before, self.request.id)
    except (SQLAlchemyError, SafeguardUnavailable, OSError) as exc:
        # Our side failed, not the receiver: try the same run again later, attempt unspent.
        countdown = compute_backoff(
            self.request.retries, max_backoff_s=get_settings().max_backoff_s
        )
        log.warning("delivery %s: %s; retrying in %.1fs", message_id, exc, countdown)
        raise self.retry(
            exc=exc, countdown=countdown, max_retries=MAX_INFRASTRUCTURE_RETRIES, queue=WEBHOOKS
        ) from exc


def _deliver(job: dict[str, Any], not_before: float | None, task_id: str | None) -> dict[str, Any]:
    now = time.time()
    if not_before is not None and not_before > now:
        return _wait(job, not_before, "waiting", task_id)
    endpoint = load_endpoint(uuid.UUID(job["endpoint_id"]))
    if endpoint is None or not endpoint.enabled:
        state = "deleted" if endpoint is None else "disabled"
        log.info(
            "delivery %s dropped: endpoint %s is %s", job["message_id"], job["endpoint_id"], state
        )
        ledger.finish(job["message_id"], task_id, OutboundStatus.DROPPED)
        return {"status": f"endpoint_{state}"}
    allowed, retry_after_s, trial_token = _circuit_allows(endpoint)
    if not allowed:
        # Not an attempt, and no not_before: each leg asks the circuit again, so a circuit
        # that closes early (an operator's reset) releases the delivery early.
        return _wait(job, now + retry_after_s, "circuit_open", task_id, hold=False)
    outcome = _post(endpoint, job)
    _record_circuit(endpoint, outcome, trial_token)
    record = record_attempt(endpoint, job["message_id"], job["event_type"], job["attempt"], outcome)
    if record.recovery is not None:
        announce_recovery(endpoint, record.recovery, publish_event)
    if outcome.success:
        ledger.finish(job["message_id"], task_id, OutboundStatus.DELIVERED)
        return {"status": "delivered", "attempt": job["attempt"], "code": outcome.response_code}
    if record.disabled_reason is not None or outcome.gone:
        ledger.finish(job["message_id"], task_id, OutboundStatus.DROPPED)
        return {"status": "endpoint_disabled", "attempt": job["attempt"]}
    return _retry_or_archive(job, endpoint, outcome, task_id)


def _retry_or_archive(
    job: dict[str, Any], endpoint: Endpoint, outcome: AttemptOutcome, task_id: str | None
) -> dict[str, Any]:
    attempt: int = job["attempt"]
    schedule = get_settings().outbound_retry_schedule_s
    delay = retry_delay_s(attempt, schedule, outcome.retry_after_s)
    if delay is not None:
        job["attempt"] = attempt + 1
        return _wait(job, time.time() + delay, "retrying", task_id)
    move_to_dead_letter_queue(
        job["message_id"],
        TASK_NAME,
        f"delivery failed after {attempt} attempts: {_describe(outcome)}",
        attempt - 1,
        # A replay starts a fresh schedule; the payload is safe to keep, the secret never here.
        {
            "task": TASK_NAME,
            "args": [],
            "kwargs": {**job, "attempt": 1},
            "options": {"queue": WEBHOOKS},
        },
        failure_category=FailureCategory.DELIVERY_EXHAUSTED,
        error_context={
            "endpoint_id": str(endpoint.id),
            "attempts": attempt,
            "last_response_code": outcome.response_code,
            "last_error": outcome.error_message,
        },
        business_id=endpoint.business_id,
    )
    ledger.finish(job["message_id"], task_id, OutboundStatus.ARCHIVED)
    return {"status": "archived", "attempt": attempt}


def _wait(
    job: dict[str, Any], not_before: float, status: str, task_id: str | None, *, hold: bool = True
) -> dict[str, Any]:
    """Re-publish the job to run at ``not_before``, in legs of at most ``max_backoff_s``.

    ``hold=False`` runs the job after the first leg whatever ``not_before`` says. The row names
    the leg (and expects it at its countdown) before the leg is published.
    """
    countdown = countdown_s(not_before, time.time(), get_settings().max_backoff_s)
    kwargs = {**job, "not_before": not_before if hold else None}
    eta = datetime.now(UTC) + timedelta(seconds=countdown)
    next_id = ledger.reschedule(job["message_id"], task_id, job["attempt"], eta)
    deliver_event.apply_async(kwargs=kwargs, countdown=countdown, task_id=next_id, queue=WEBHOOKS)
    return {"status": status, "attempt": job["attempt"], "not_before": not_before}


def _post(endpoint: Endpoint, job: dict[str, Any]) -> AttemptOutcome:
    import httpx  # here: a worker that delivers nothing need not carry it (~6.5 MB)

    body = json.dumps(job["payload"], separators=(",", ":")).encode()
    headers = signature_headers(endpoint.secret, job["message_id"], int(time.time()), body)
    headers.update({"content-type": "application/json", "user-agent": _USER_AGENT})
    started = time.monotonic()
    try:
        response = httpx.post(
            endpoint.url, content=body, headers=headers, timeout=get_settings().outbound_timeout_s
        )
    except httpx.HTTPError as exc:
        elapsed_ms = round((time.monotonic() - started) * 1000)
        return AttemptOutcome(None, f"{type(exc).__name__}: {exc}", elapsed_ms)
    elapsed_ms = round((time.monotonic() - started) * 1000)
    success = 200 <= response.status_code < 300
    return AttemptOutcome(
        response.status_code,
        None if success else f"HTTP {response.status_code}: {response.text[:500]}",
        elapsed_ms,
        parse_retry_after(response.headers.get("retry-after"), time.time()),
    )


def _circuit_allows(endpoint: Endpoint) -> tuple[bool, float, str | None]:
    """(allowed, retry_after_s, trial_token) from the endpoint's circuit, per the fail mode."""
    settings = get_settings()
    try:
        decision = check_circuit_breaker(
            None, endpoint.circuit_name, business_id=endpoint.business_id
        )
    except SafeguardUnavailable:
        log.warning(
            "circuit of %s unreachable, failing %s", endpoint.id, settings.safeguard_fail_mode
        )
        return settings.safeguard_fail_mode == "open", settings.fail_closed_retry_s, None
    return decision.allowed, decision.retry_after_s, decision.trial_token


def _record_circuit(endpoint: Endpoint, outcome: AttemptOutcome, trial_token: str | None) -> None:
    # Only signs of an unhealthy receiver count; a 4xx is an answer from a healthy one.
    code = outcome.response_code
    transient = code is None or code >= 500 or code == 408
    success: bool | None = True if outcome.success else False if transient else None
    try:
        record_circuit_breaker_result(
            None,
            endpoint.circuit_name,
            success,
            failure_reason=None if success is not False else _describe(outcome),
            trial_token=trial_token,
            business_id=endpoint.business_id,
        )
    except SafeguardUnavailable:
        log.warning("circuit of %s unreachable: outcome not recorded", endpoint.id)


def _describe(outcome: AttemptOutcome) -> str:
    return outcome.error_message or f"HTTP {outcome.response_code}"
