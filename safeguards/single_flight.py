"""Single flight with coalescing: one run per scope at a time, and one follow-up for any burst.

``request`` says whether the caller should enqueue a run (nothing queued or running) or whether
the request was folded into the pending one (the scope is marked dirty). A run ``acquire``s a
lease (it expires, so a crashed holder blocks the scope for at most ``lease_s``) and, on
``release``, learns whether requests arrived meanwhile: then it enqueues exactly one follow-up.
Every verb is one atomic Lua call, so bursts from many processes coalesce exactly.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import redis

from safeguards.redis_state import LuaScript, get_redis, key, run_script

_SCRIPT = LuaScript("safeguards", "single_flight")

#: How long a run's lease lasts unless renewed, seconds.
DEFAULT_LEASE_S = 120.0
#: How long a queued-but-not-started marker lives; past it a lost message no longer blocks, s.
DEFAULT_PENDING_TTL_S = 4 * 3600.0


@dataclass(frozen=True)
class SingleFlight:
    """Coalescing single-run coordination for one kind of work (e.g. ``"sync"``)."""

    kind: str
    client: redis.Redis | None = None
    lease_s: float = DEFAULT_LEASE_S
    pending_ttl_s: float = DEFAULT_PENDING_TTL_S

    def request(self, scope: str) -> bool:
        """True when the caller must enqueue a run; False when folded into a pending one."""
        return self._call("request", scope, "") == 1

    def acquire(self, scope: str, owner: str) -> bool:
        """Take the run lease for ``owner``; False (and marked dirty) if another run holds it."""
        return self._call("acquire", scope, owner) == 1

    def renew(self, scope: str, owner: str) -> bool:
        """Extend ``owner``'s lease; False when it was lost (expired and taken)."""
        return self._call("renew", scope, owner) == 1

    def release(self, scope: str, owner: str) -> bool:
        """End ``owner``'s run; True when requests arrived meanwhile and one follow-up is due."""
        return self._call("release", scope, owner) == 1

    def cancel(self, scope: str) -> None:
        """Undo a ``request`` whose run could not be enqueued, so later requests are not lost."""
        self._call("cancel", scope, "")

    def _call(self, verb: str, scope: str, owner: str) -> int:
        keys = [key(self.kind, scope, part) for part in ("pending", "lease", "dirty")]
        args = [verb, owner, int(self.lease_s * 1000), int(self.pending_ttl_s * 1000)]
        return int(run_script(self.client or get_redis(), _SCRIPT, keys, args))


def new_owner() -> str:
    """A unique token naming one run."""
    return uuid.uuid4().hex
