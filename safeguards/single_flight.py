"""Single flight with coalescing: one run per scope at a time, and one follow-up for any burst.

``request`` says whether the caller should enqueue a run (nothing queued or running) or whether
the request was folded into the pending one (the scope is marked dirty). A run ``acquire``s a
lease (it expires, so a crashed holder blocks the scope for at most ``lease_s``) and, on
``release``, learns whether requests arrived meanwhile: then it enqueues exactly one follow-up.
A run that continues over several executions re-acquires with ``resume=True``, which keeps the
requests folded into it pending: only a fresh run, which reads everything from its start, covers
them. Every verb is one atomic Lua call, so bursts from many processes coalesce exactly.

The pending marker is an accelerator, never the record: it names its run's owner (a job id)
so the caller can check the durable ledger (``holder``, ``take_over``), and it lives only while
that run may still start — ``pending_ttl_s``, the queue bound, past the run's countdown
(``requeue``) or its last lease renewal. A lost message therefore blocks its scope for at most
its countdown plus the queue bound, never for a fixed number of hours.

A run that executes as several messages (a job's retries, continuations, a recovered copy) names
each execution in its lease: owner ``<run>/<execution>``. A stale execution (one the ledger has
handed to another message) then cannot clear the dirty flag or keep the lease: ``claim`` takes
the lease without clearing anything, the caller asks the ledger, and only the execution it names
``begin``s (clears the flag) or ``take``s the lease from a sibling; a stale one ``drop``s it.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from safeguards.redis_state import LuaScript, get_redis, key, run_script, run_script_batch

_SCRIPT = LuaScript("safeguards", "single_flight")

#: How long a run's lease lasts unless renewed, seconds.
DEFAULT_LEASE_S = 120.0
#: Queue bound: how long a published run is expected to take to start once its countdown is
#: over (and the longest gap between a running run's renewals), seconds. Past it the pending
#: marker lapses, so a lost message stops folding requests; a run merely slower than this only
#: costs one extra run, which the lease serialises.
DEFAULT_PENDING_TTL_S = 600.0
#: The owner a request names when the caller does not (the marker then says only "pending").
ANONYMOUS = "1"


class Claim(enum.IntEnum):
    """Who holds the lease after ``SingleFlight.claim`` (the script's answer)."""

    BUSY = 0
    HELD = 1
    SIBLING = 2


@dataclass(frozen=True)
class SingleFlight:
    """Coalescing single-run coordination for one kind of work (e.g. ``"sync"``)."""

    kind: str
    client: redis.Redis | None = None
    lease_s: float = DEFAULT_LEASE_S
    pending_ttl_s: float = DEFAULT_PENDING_TTL_S
    #: How long requests folded into a run stay marked at least, seconds (None: as long as the
    #: pending marker). Longer lets a fold outlive a marker that lapsed while its run was still
    #: alive (its release then still owes the follow-up); a fold left after its run ended costs
    #: at most one extra run.
    dirty_ttl_s: float | None = None

    def request(self, scope: str, owner: str = ANONYMOUS) -> bool:
        """True when the caller must enqueue the run ``owner``; False when folded into one."""
        return self._call("request", scope, owner) == 1

    def holder(self, scope: str) -> str | None:
        """The owner the pending marker names, or None when nothing is pending."""
        found = self._run("holder", scope, "")
        if isinstance(found, bytes):
            return found.decode()
        return found if isinstance(found, str) else None

    def take_over(self, scope: str, stale: str | None, owner: str) -> bool:
        """Make ``owner`` the pending run if the marker still names ``stale`` (None: no marker).

        For a caller that found, in the ledger, that the marker's run has ended. True when the
        caller must now enqueue ``owner``; False when another caller changed the marker first.
        """
        return self._call("take_over", scope, owner, other=stale or "") == 1

    def acquire(self, scope: str, owner: str, *, resume: bool = False) -> bool:
        """Take the run lease for ``owner``; False (and marked dirty) if another run holds it.

        ``resume`` says this execution continues a run already under way (it reads on from a
        checkpoint): requests folded so far stay pending and cause a follow-up on ``release``.
        False too, touching nothing, when another execution of the same run holds it (see
        ``claim``).
        """
        return self._call("acquire", scope, owner, resume=resume) == 1

    def claim(self, scope: str, owner: str) -> Claim:
        """``acquire`` with ``resume``, saying who holds the lease when the caller does not.

        ``owner`` is a token ``<run>/<execution>``. ``HELD``: the caller holds the lease now
        (a fresh run then calls ``begin`` once the ledger confirmed it). ``SIBLING``: another
        execution of the same run holds it, nothing changed: the ledger says which of the two
        may run (``take`` for the one it names). ``BUSY``: another run holds it; marked dirty.
        """
        return Claim(self._call("acquire", scope, owner, resume=True))

    def take(self, scope: str, owner: str) -> bool:
        """Take the lease for ``owner`` if it is free or held by another execution of the same
        run (the caller is the one the ledger names); False if another run holds it."""
        return self._call("take", scope, owner) == 1

    def begin(self, scope: str, owner: str) -> bool:
        """A fresh run starts reading: requests folded so far are covered (the dirty flag goes).

        Only while ``owner`` holds the lease; False otherwise (nothing changed).
        """
        return self._call("begin", scope, owner) == 1

    def drop(self, scope: str, owner: str) -> None:
        """Give back the lease if ``owner`` holds it (a stale execution); nothing else changes."""
        self._call("drop", scope, owner)

    def renew(self, scope: str, owner: str) -> bool:
        """Extend ``owner``'s lease and pending marker; False when the lease was lost."""
        return self._call("renew", scope, owner) == 1

    def requeue(self, scope: str, owner: str, delay_s: float, next_owner: str = "") -> None:
        """``owner`` is re-published to start in ``delay_s`` seconds: keep it pending so long.

        With ``next_owner`` (the next execution's token, e.g. a continuation's), a lease
        ``owner`` holds passes to it for a lease plus ``delay_s``.
        """
        self._call("requeue", scope, owner, delay_s=delay_s, other=next_owner)

    def release(self, scope: str, owner: str, next_owner: str = ANONYMOUS) -> bool:
        """End ``owner``'s run; True when requests arrived meanwhile and one follow-up is due.

        The pending marker then names ``next_owner``, the follow-up the caller enqueues. A
        repeated release (the caller failed after the first) answers True again while the
        marker still names that same ``next_owner``: derive it from the run so it is stable.
        """
        return self._call("release", scope, owner, other=next_owner) == 1

    def cancel(self, scope: str, owner: str = "") -> None:
        """Undo a ``request`` whose run could not be enqueued, so later requests are not lost.

        With ``owner``, only a marker that still names it is removed.
        """
        self._call("cancel", scope, owner)

    def _call(self, verb: str, scope: str, owner: str, **extra: Any) -> int:
        return int(self._run(verb, scope, owner, **extra))

    def run_many(self, verb: str, calls: Sequence[tuple[str, str, str]]) -> list[Any]:
        """``verb`` for each ``(scope, owner, other)`` in one pipelined round trip (each call
        still one atomic step); the raw replies, in order. For bulk callers such as Beat's
        reconciliation. Raises SafeguardUnavailable when Redis is unreachable."""
        if not calls:
            return []
        batch = [self._args(verb, scope, owner, other=other) for scope, owner, other in calls]
        # One pipeline per Redis Cluster node (a cluster pipeline refuses EVALSHA).
        return run_script_batch(self.client or get_redis(), _SCRIPT, batch)

    def _run(
        self,
        verb: str,
        scope: str,
        owner: str,
        *,
        resume: bool = False,
        other: str = "",
        delay_s: float = 0.0,
    ) -> Any:
        keys, args = self._args(verb, scope, owner, resume=resume, other=other, delay_s=delay_s)
        return run_script(self.client or get_redis(), _SCRIPT, keys, args)

    def _args(
        self,
        verb: str,
        scope: str,
        owner: str,
        *,
        resume: bool = False,
        other: str = "",
        delay_s: float = 0.0,
    ) -> tuple[list[str], list[Any]]:
        keys = [key(self.kind, scope, part) for part in ("pending", "lease", "dirty")]
        # A running run renews its marker only as often as its lease: never let it lapse first.
        pending_ms = int(max(self.pending_ttl_s, self.lease_s) * 1000)
        args = [verb, owner, int(self.lease_s * 1000), pending_ms]
        args += ["1" if resume else "0", other, int(max(delay_s, 0.0) * 1000)]
        return keys, [*args, int(max(self.dirty_ttl_s or 0.0, 0.0) * 1000)]


def new_owner() -> str:
    """A unique token naming one run."""
    return uuid.uuid4().hex
