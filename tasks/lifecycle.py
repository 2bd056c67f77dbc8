"""A fault inside a job's lifecycle hands the message back; it never acknowledges it silently.

The retry, deferral and archive paths of ``SafeguardedTask`` write to PostgreSQL (the job row,
the archive), Redis (the single flight) and the broker (the re-published message). Should any
of them fail, the job has not reached its next state: raising the error would let Celery
record FAILURE and acknowledge the message (``task_acks_late`` acknowledges failures), leaving
the job row stuck. ``handing_back`` turns such a fault into ``Reject(requeue=True)`` instead,
after a pause that doubles with each consecutive fault in this process (so an outage does not
spin the message through the broker), and Celery returns the message to its queue.

Redelivery is bounded for sync jobs by the ledger: a message that keeps failing this way leaves
its job quiet, the recovery sweep (tasks/recovery.py) re-publishes the job under a new task id
(the old message turns stale, a no-op) and archives it as ``recovery_exhausted`` past
``sync_max_recoveries``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from celery.exceptions import Reject, Retry

from models import FailureCategory
from safeguards.backoff import compute_backoff
from safeguards.errors import CircuitOpen, Refused, ThrottledFailure

log = logging.getLogger(__name__)

#: Pause before handing back a message after its first lifecycle fault, seconds; doubles.
HAND_BACK_BASE_S = 0.5
#: Longest such pause, seconds (well inside any soft time limit).
HAND_BACK_MAX_S = 10.0

# Consecutive lifecycle faults in this process (reset by a clean pass); sizes the pause.
_faults = 0


@contextmanager
def handing_back(what: str, task_id: str | None) -> Iterator[None]:
    """Run one lifecycle step; any failure in it becomes ``Reject(requeue=True)``.

    ``Retry`` and ``Reject`` pass through untouched, except Celery's own
    ``Reject(requeue=False)``, which ``Task.retry`` raises when it cannot publish the retry:
    that message would be dropped, so it is handed back too.
    """
    global _faults
    try:
        yield
    except Retry:
        raise
    except Reject as exc:
        if exc.requeue:
            raise
        _hand_back(what, task_id, exc.reason if isinstance(exc.reason, Exception) else exc)
    except Exception as exc:
        _hand_back(what, task_id, exc)
    else:
        _faults = 0


def _hand_back(what: str, task_id: str | None, exc: BaseException) -> None:
    global _faults
    pause_s = compute_backoff(
        _faults, base_s=HAND_BACK_BASE_S, max_backoff_s=HAND_BACK_MAX_S, jitter=False
    )
    _faults += 1
    log.error(
        "%s of task %s failed, handing the message back in %.1fs: %s: %s",
        what,
        task_id,
        pause_s,
        type(exc).__name__,
        exc,
    )
    time.sleep(pause_s)
    raise Reject(exc, requeue=True) from exc


def too_long(reason: Refused | ThrottledFailure) -> FailureCategory:
    """The archive category of a job deferred past its horizon for ``reason``."""
    if isinstance(reason, CircuitOpen):
        return FailureCategory.CIRCUIT_OPEN_TOO_LONG
    if isinstance(reason, ThrottledFailure):
        return FailureCategory.THROTTLED_TOO_LONG
    return FailureCategory.DEFERRED_TOO_LONG
