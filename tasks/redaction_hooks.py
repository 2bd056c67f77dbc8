"""Every task message carries redacted ``argsrepr`` / ``kwargsrepr``: what Flower and logs show.

Celery puts a display copy of a message's arguments beside the real ones: the ``argsrepr`` and
``kwargsrepr`` headers, which the worker's events (Flower's task list), its log lines and the
``task-sent`` event show instead of the arguments. Two hooks make that copy the output of
``safeguards.redaction.redact``:

- ``before_task_publish`` rewrites the headers of every message any process publishes (API,
  Beat, workers, the CLI), whatever path built it.
- ``RedactingAMQP`` builds the message with the redacted copy in the first place, because the
  ``task-sent`` event (``task_send_sent_event``) is assembled before that signal fires and
  would otherwise carry the raw arguments to Flower.

Both fail closed: a value redaction cannot handle shows a placeholder, never the raw arguments.
``tasks/__init__`` imports this module and calls ``install(app)`` (this module does not import
the app, so the two form no import loop): every process that loads the app (``-A tasks``) has
both. The real arguments travel unchanged in the body: a task still receives what it was sent.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.app.amqp import AMQP
from celery.signals import before_task_publish
from celery.utils.saferepr import saferepr

from safeguards.redaction import redact

log = logging.getLogger(__name__)

#: Longest ``argsrepr`` / ``kwargsrepr`` kept, characters (Celery's own default).
REPR_MAXSIZE = 1024
#: What a message shows when its arguments could not be redacted.
UNREDACTABLE = "[arguments hidden: redaction failed]"


def redacted_repr(value: Any) -> str:
    """A bounded display repr of ``value`` with secrets masked; a placeholder if that fails."""
    try:
        return str(saferepr(redact(value), REPR_MAXSIZE))
    except Exception:
        # A display problem must neither stop a publish nor let the raw arguments be shown.
        log.exception("redaction: could not redact a task message's arguments")
        return UNREDACTABLE


class RedactingAMQP(AMQP):  # type: ignore[misc]
    """Celery's message builder, with the redacted display copy in headers and sent events."""

    def as_task_v2(
        self, task_id: str, name: str, args: Any = None, kwargs: Any = None, *rest: Any, **opts: Any
    ) -> Any:
        """Build a protocol 2 message whose display copy of the arguments is redacted."""
        # Derived from the real arguments even when a caller passed its own display copy.
        opts["argsrepr"] = redacted_repr(args if args is not None else ())
        opts["kwargsrepr"] = redacted_repr(kwargs if kwargs is not None else {})
        return super().as_task_v2(task_id, name, args, kwargs, *rest, **opts)


def install(celery_app: Celery) -> None:
    """Make ``celery_app`` build its messages with ``RedactingAMQP`` (before its first one)."""
    if "amqp" in vars(celery_app):
        log.error(
            "redaction: %s built messages already; its sent events are not redacted", celery_app
        )
    celery_app.amqp_cls = RedactingAMQP


@before_task_publish.connect(dispatch_uid="syncguard.redact_message_reprs")  # type: ignore[untyped-decorator]
def redact_message_reprs(
    sender: str | None = None,
    body: Any = None,
    headers: dict[str, Any] | None = None,
    **_: Any,
) -> None:
    """Set the outgoing message's ``argsrepr`` / ``kwargsrepr`` headers to redacted copies."""
    # Protocol 2 only: its body is (args, kwargs, embed); protocol 1 carries no display copy.
    if headers is None or not isinstance(body, tuple) or len(body) < 2:
        return
    headers["argsrepr"] = redacted_repr(body[0])
    headers["kwargsrepr"] = redacted_repr(body[1])
