"""Poison messages end in the dead-letter archive before they are acknowledged; the worker lives.

A poison message is one no task can run: an unknown task name, a body that is not JSON, a
content type we refuse (pickle), JSON that is not Celery's message protocol, or a Redis queue
entry kombu could not parse (``tasks.redis_transport`` wraps those into a message of content
type ``application/x-syncguard-undecodable``). Celery's worker consumer drops each with a log
line. Its signals for them (``task_unknown``, ``task_rejected``) fire only after the message is
gone, so they cannot archive before the acknowledgement; ``ArchivingConsumer`` (celeryconfig's
``worker_consumer``, Celery's documented way to supply the consumer class) overrides the
consumer's own handlers instead: archive as ``validation``, then Celery's handling (log line,
reject, result, event, signal) as before.

For a known task Celery decodes the body only in the pool child, where a failure is recorded and
acknowledged without any task hook; so the consumer checks the body first (one JSON parse of a
small body per message) and treats a malformed one as an invalid task.

Celery's handlers log the message's raw body; ``RedactingFilter`` on the consumer's logger masks
secret-shaped text in those lines (``safeguards.redaction.redact_text``), as in the archive.

If the archive cannot be written the message is handed back to the broker (``reject`` with
requeue) on the worker's timer after a pause that doubles per failure of the same message, up to
``ARCHIVE_RETRY_MAX_S``: never dropped, redelivered at most once per pause, and the consumer's
thread never blocks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Collection
from typing import Any

from celery.exceptions import InvalidTaskError
from celery.worker.consumer import Consumer
from kombu.message import Message
from kombu.serialization import loads, prepare_accept_content

from models import FailureCategory
from safeguards.backoff import compute_backoff
from safeguards.dead_letter.archive import error_context_from, move_to_dead_letter_queue
from safeguards.errors import ValidationFailure
from safeguards.redaction import redact_text
from tasks.archiving import ARCHIVE_RETRY_BASE_S, ARCHIVE_RETRY_MAX_S
from tasks.redis_transport import WRAPPED_ID_HEADER

log = logging.getLogger(__name__)

#: ``job_type`` of an archived message that names no task.
POISON_JOB_TYPE = "syncguard.poison_message"
#: Longest raw body kept in an archive entry, characters.
MAX_BODY_CHARS = 64_000
#: Messages whose archive failed that the consumer remembers (to size their pause).
MAX_TRACKED_FAILURES = 1_000
# The archive's job_id column width (models.FailedJobArchive.job_id).
_JOB_ID_CHARS = 155
#: Headers of Celery's message protocol 2 (docs.celeryq.dev, "Message Protocol").
CELERY_PROTOCOL_HEADERS = frozenset(
    {
        "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries",
        "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin",
        "ignore_result", "replaced_task_nesting", "stamped_headers", "stamps",
    }
)  # fmt: skip
#: The logger of Celery's consumer, whose poison-message lines quote the raw message.
CONSUMER_LOGGER = "celery.worker.consumer.consumer"


class PoisonMessage(ValidationFailure):
    """A message no task can run; the exception an archive entry records for it."""


def archive_message(message: Message, reason: str, exc: BaseException | None = None) -> uuid.UUID:
    """Archive ``message`` as ``validation`` with its raw content (redacted); the entry's id."""
    headers = message.headers if isinstance(message.headers, dict) else {}
    body = body_view(message.body)
    args, kwargs = _protocol2_arguments(body)
    task = headers.get("task") if isinstance(headers.get("task"), str) else None
    job_data = {
        "task": task or POISON_JOB_TYPE,
        "args": args,
        "kwargs": kwargs,
        # Replay sends these headers with a fresh message: Celery's own would override its id.
        "headers": {k: v for k, v in headers.items() if k not in CELERY_PROTOCOL_HEADERS},
        "options": {"queue": (message.delivery_info or {}).get("routing_key")},
        "message": {
            "headers": headers,
            "content_type": message.content_type,
            "content_encoding": message.content_encoding,
            "delivery_info": dict(message.delivery_info or {}),
            "body": body,
        },
    }
    failure = PoisonMessage(reason)
    if exc is not None:
        failure.__cause__ = exc
    return move_to_dead_letter_queue(
        poison_job_id(message, headers),
        task or POISON_JOB_TYPE,
        reason,
        0,
        job_data,
        failure_category=FailureCategory.VALIDATION,
        error_context=error_context_from(failure),
    )


def poison_job_id(message: Message, headers: dict[str, Any]) -> str:
    """The message's task id, else an id stable across its redeliveries."""
    for candidate in (headers.get("id"), headers.get(WRAPPED_ID_HEADER)):
        if isinstance(candidate, str) and candidate:
            return candidate[:_JOB_ID_CHARS]
    properties = message.properties or {}
    for name in ("correlation_id", "message_id"):
        if isinstance(properties.get(name), str) and properties[name]:
            return str(properties[name])[:_JOB_ID_CHARS]
    # kombu's Redis transport tags each message with a UUID that survives its redeliveries
    # (AMQP's tags are per-channel counters: there, identical bodies share one entry).
    if isinstance(message.delivery_tag, str) and message.delivery_tag:
        return f"poison-{message.delivery_tag}"[:_JOB_ID_CHARS]
    raw = message.body if isinstance(message.body, bytes) else str(message.body).encode()
    return f"poison-{hashlib.sha256(raw).hexdigest()}"


def body_view(body: Any) -> Any:
    """The body as a reviewer reads it: parsed JSON, else text (escaped), at most MAX_BODY_CHARS."""
    if not isinstance(body, bytes | str):
        return body
    text = body if isinstance(body, str) else body.decode("utf-8", "backslashreplace")
    try:
        return json.loads(text) if len(text) <= MAX_BODY_CHARS else text[:MAX_BODY_CHARS]
    except ValueError:
        return text[:MAX_BODY_CHARS]


def _protocol2_arguments(body: Any) -> tuple[list[Any], dict[str, Any]]:
    if isinstance(body, list) and len(body) == 3:
        args, kwargs = body[0], body[1]
        if isinstance(args, list) and isinstance(kwargs, dict):
            return args, kwargs
    return [], {}


def protocol2_problem(message: Message, accept: Collection[str]) -> str | None:
    """Why a task message's body cannot be run, or None (also for messages Celery routes itself).

    Celery's protocol 2 body is ``[args, kwargs, embed]``: a list, a mapping and a mapping
    (docs.celeryq.dev, "Message Protocol", version 2).
    """
    headers = message.headers
    if not isinstance(headers, dict) or "task" not in headers:
        return None  # not protocol 2: Celery's own paths (unknown message, protocol 1) apply
    if (problem := _headers_problem(headers)) is not None:
        return problem
    try:
        body = loads(  # type: ignore[no-untyped-call]
            message.body, message.content_type, message.content_encoding, accept=accept
        )
    except Exception as exc:
        return f"undecodable body ({message.content_type}): {exc}"
    if not (isinstance(body, list | tuple) and len(body) == 3):
        return "body is not Celery's [args, kwargs, embed]"
    args, kwargs, embed = body
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        return "body's args are not a list or its kwargs not an object"
    if embed is not None and not isinstance(embed, dict):
        return "body's embed is not an object"
    return None


def _headers_problem(headers: dict[str, Any]) -> str | None:
    """Headers the consumer reads before any hook (a bad one stopped it, restart after restart)."""
    if not isinstance(headers.get("task"), str):
        return "the task header is not a name"
    if not isinstance(headers.get("id"), str) or not headers["id"]:
        return "no task id header"
    limits = headers.get("timelimit")
    if limits is not None and not (
        isinstance(limits, list | tuple)
        and len(limits) == 2
        and all(limit is None or isinstance(limit, int | float) for limit in limits)
    ):
        return "the timelimit header is not [hard, soft] seconds"
    return None


class RedactingFilter(logging.Filter):
    """Renders each record's message with secret-shaped text masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace the record's message by its redacted rendering; never drops a record."""
        try:
            record.msg, record.args = redact_text(record.getMessage()), None
        except Exception:  # fail closed: a line we cannot render safely is not shown
            record.msg, record.args = "[log line hidden: redaction failed]", None
        return True


class ArchivingConsumer(Consumer):  # type: ignore[misc]
    """Celery's worker consumer that archives each poison message before dropping it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._archive_failures: dict[str, int] = {}
        consumer_log = logging.getLogger(CONSUMER_LOGGER)
        if not any(isinstance(f, RedactingFilter) for f in consumer_log.filters):
            consumer_log.addFilter(RedactingFilter())

    def on_decode_error(self, message: Message, exc: BaseException) -> None:
        """A message kombu or Celery could not decode."""
        if self._archived(message, f"undecodable message: {exc}", exc):
            super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Message) -> None:
        """A message that is not a task message."""
        if self._archived(message, "not a Celery task message"):
            super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Message, exc: BaseException) -> None:
        """A task message naming a task this worker does not have."""
        name = (message.headers or {}).get("task") if isinstance(message.headers, dict) else None
        if self._archived(message, f"unknown task {name!r}", exc):
            super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Message, exc: BaseException) -> None:
        """A task message whose content type or body cannot be run."""
        if self._archived(message, f"invalid task message: {exc}", exc):
            super().on_invalid_task(body, message, exc)

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        """Celery's handler, behind a check that a task message's body can be run."""
        handle = super().create_task_handler(*args, **kwargs)
        accept = prepare_accept_content(self.app.conf.accept_content)  # type: ignore[no-untyped-call]

        def on_task_received(message: Message) -> Any:
            problem = protocol2_problem(message, accept)
            if problem is not None:
                return self.on_invalid_task(None, message, InvalidTaskError(problem))
            return handle(message)

        return on_task_received

    def _archived(self, message: Message, reason: str, exc: BaseException | None = None) -> bool:
        """Archive ``message``; False (and a delayed requeue scheduled) if that failed."""
        headers = message.headers if isinstance(message.headers, dict) else {}
        key = poison_job_id(message, headers)
        try:
            archive_message(message, reason, exc)
        except Exception as db_exc:
            failures = self._archive_failures.get(key, 0)
            if len(self._archive_failures) >= MAX_TRACKED_FAILURES:
                self._archive_failures.clear()
            self._archive_failures[key] = failures + 1
            pause_s = compute_backoff(
                failures,
                base_s=ARCHIVE_RETRY_BASE_S,
                max_backoff_s=ARCHIVE_RETRY_MAX_S,
                jitter=False,
            )
            log.error(
                "archiving poison message %s failed, requeueing in %.1fs: %s", key, pause_s, db_exc
            )
            self.timer.call_after(pause_s, _requeue, (message,))
            return False
        self._archive_failures.pop(key, None)
        return True


def _requeue(message: Message) -> None:
    try:
        message.reject(requeue=True)  # type: ignore[no-untyped-call]
    except Exception:
        # The connection it came on is gone: the broker has put the message back already.
        log.warning("could not requeue poison message; the broker restores it", exc_info=True)
