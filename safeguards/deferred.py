"""Successful guarded calls whose outcome waits for the next round trip of the same scope.

A guarded call that succeeded without holding a half-open trial needs nothing back from
Redis: its outcome (the circuit's success, the limiter's success count, its lease given back)
only has to arrive. So the guard defers it here, per scope (store, circuit, provider), and the
next admission of that scope in this process carries it in the same script run
(``safeguards.admission``): one round trip per guarded call instead of two. What no admission
picks up is sent by a daemon thread within ``FLUSH_INTERVAL_S`` (and at exit).

Effects of the delay, all bounded by ``FLUSH_INTERVAL_S`` or the next call: a lease is held a
little longer (conservative: the concurrency limit can only admit fewer, never more); a
success reaches the circuit a little later, which is the same as the call having taken that
much longer. A process killed before sending loses its deferred successes (counters only; the
leases expire after ``LEASE_TTL_S``). Failures, ignored outcomes and trials are never deferred.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from models.enums import Provider

log = logging.getLogger(__name__)

#: Seconds a deferred outcome waits for its scope's next admission before it is sent alone.
FLUSH_INTERVAL_S = 0.2

#: (store_id, circuit_name, provider): the outcomes of one scope share one script run.
Scope = tuple[uuid.UUID, str, Provider]


@dataclass
class Pending:
    """One scope's deferred successes and the leases they still hold."""

    successes: int = 0
    leases: list[str] = field(default_factory=list)


K = TypeVar("K", bound=Hashable)


class DeferredOutcomes(Generic[K]):
    """A process's deferred outcomes per key (a guard scope, or a circuit for the breaker's own
    ``record(defer=True)``), thread-safe and fork-aware, with a background sender."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[K, Pending] = {}
        self._owner = os.getpid()
        self._thread: threading.Thread | None = None
        self._sender: Callable[[K, Pending], None] | None = None

    def defer(self, scope: K, lease_id: str | None, sender: Callable[[K, Pending], None]) -> None:
        """Remember one success of ``scope`` (and its lease); ``sender`` flushes it if no
        admission of the scope picks it up first."""
        with self._lock:
            if self._owner != os.getpid():  # a forked child: the parent sends the parent's
                self._owner, self._pending, self._thread = os.getpid(), {}, None
            pending = self._pending.get(scope)
            if pending is None:
                pending = self._pending[scope] = Pending()
            pending.successes += 1
            if lease_id:
                pending.leases.append(lease_id)
            self._sender = sender
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._send_forever, name="guard-outcomes", daemon=True
                )
                self._thread.start()

    def take(self, scope: K) -> Pending | None:
        """The scope's pending outcomes, removed: the caller now sends them."""
        if not self._pending:  # the common idle case, without the lock
            return None
        with self._lock:
            if self._owner != os.getpid():
                return None
            return self._pending.pop(scope, None)

    def give_back(self, scope: K, pending: Pending) -> None:
        """Put outcomes whose send failed back, merged with any deferred since."""
        with self._lock:
            current = self._pending.setdefault(scope, Pending())
            current.successes += pending.successes
            current.leases[:0] = pending.leases

    def flush(self) -> int:
        """Send every pending scope now; returns how many scopes were sent."""
        with self._lock:
            if self._owner != os.getpid():
                return 0
            batch, self._pending = self._pending, {}
            sender = self._sender
        sent = 0
        for scope, pending in batch.items():
            if sender is None:
                break
            try:
                sender(scope, pending)
                sent += 1
            except Exception as exc:  # Redis away: kept for the next flush, never raised
                log.warning("deferred guard outcomes not sent, kept for the next try: %s", exc)
                self.give_back(scope, pending)
        return sent

    def _send_forever(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL_S)
            try:
                self.flush()
            except Exception:  # the thread must outlive any one failure
                log.exception("sending deferred guard outcomes failed")


#: The process's deferred guard outcomes.
DEFERRED: DeferredOutcomes[Scope] = DeferredOutcomes()
atexit.register(DEFERRED.flush)
