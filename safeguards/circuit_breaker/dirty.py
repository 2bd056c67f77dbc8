"""Which circuits changed since the last mirror: a Redis set the guard path adds to in batches.

The mirror (``mirror_dirty_circuits``, run by Beat every few seconds) used to SCAN every circuit
key and read each one; at 100,000 stores that alone outlasted its period. Now every operation
that changes a circuit marks it (``mark``), and the mirror pops only marked circuits, in chunks.

Marking costs the hot path no round trip: marks are kept in a per-process set and sent as one
``SADD`` by a background thread every ``FLUSH_INTERVAL_S``. The set is one key written from
Python, never from inside a circuit's script: on Redis Cluster a script may only touch keys of
its own hash slot (the store's), and a SADD from a pipeline goes to the set's slot on its own.

A mark lost with its process (killed between the change and the next send) or a mark sent in
the instant before its own script ran only delays the counters' mirror: transitions are written
through at once (``CircuitBreaker._on_transition``), and ``backstop_scan`` walks every circuit
key a slice per run (a SCAN cursor kept in Redis), re-marking those whose hash says dirty.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import threading
import time
import uuid

import redis

from safeguards.circuit_breaker.states import CircuitId, decode_text
from safeguards.redis_state import key, primaries
from syncguard.settings import get_settings

log = logging.getLogger(__name__)

#: Seconds between two sends of a process's marks (the mirror runs every 5 s).
FLUSH_INTERVAL_S = 0.5
#: Marks kept at most per client between two sends (more wait for the backstop scan).
MAX_PENDING = 100_000
#: Key kinds: the set of dirty circuits and the backstop's SCAN cursor.
DIRTY_KIND = "circuit-dirty"
CURSOR_KIND = "circuit-backstop"


def dirty_key() -> str:
    """The set of circuits changed since they were last mirrored (members: ``member``)."""
    return key(DIRTY_KIND, "all")


def member(circuit: CircuitId) -> str:
    """``store|business|name`` (empty for a missing id; the name last, so it may hold ``|``)."""
    return f"{circuit.store_id or ''}|{circuit.business_id or ''}|{circuit.circuit_name}"


def parse_member(raw: bytes | str) -> CircuitId | None:
    """The circuit a member names; None for a malformed one (skipped, never raised)."""
    store, _, rest = decode_text(raw).partition("|")
    business, _, name = rest.partition("|")
    try:
        return CircuitId(
            uuid.UUID(store) if store else None,
            name,
            uuid.UUID(business) if business else None,
        )
    except ValueError:
        return None


class DirtyMarks:
    """A process's unsent marks per client, sent by a daemon thread (fork-aware)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[redis.Redis, set[str]]] = {}
        self._owner = os.getpid()
        self._thread: threading.Thread | None = None

    def mark(self, client: redis.Redis, circuit: CircuitId) -> None:
        """Remember that ``circuit`` (on ``client``'s Redis) changed; sent within the interval."""
        with self._lock:
            if self._owner != os.getpid():  # a forked child: its parent sends the parent's marks
                self._owner, self._pending, self._thread = os.getpid(), {}, None
            entry = self._pending.setdefault(id(client), (client, set()))
            if len(entry[1]) < MAX_PENDING:
                entry[1].add(member(circuit))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._send_forever, name="circuit-dirty-marks", daemon=True
                )
                self._thread.start()

    def flush(self) -> int:
        """Send every pending mark now (one SADD per client); returns how many were sent."""
        with self._lock:
            pending, self._pending = self._pending, {}
        sent = 0
        for client, members in pending.values():
            if not members:
                continue
            try:
                client.sadd(dirty_key(), *members)
                sent += len(members)
            except redis.RedisError as exc:
                # Dropped, not kept: the circuits' hashes still say dirty, so the backstop scan
                # re-marks them once Redis answers (a dead client is not retried forever).
                log.warning(
                    "%d circuit marks not sent (the backstop scan finds them): %s",
                    len(members),
                    exc,
                )
        return sent

    def _send_forever(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL_S)
            try:
                self.flush()
            except Exception:  # the thread must survive anything; the backstop covers a loss
                log.exception("sending circuit marks failed")


#: The process's marks (the breaker's ``script_call`` adds to it).
MARKS = DirtyMarks()
atexit.register(MARKS.flush)


def backstop_scan(client: redis.Redis, budget_keys: int) -> int:
    """Look at about ``budget_keys`` more circuit keys (a SCAN continued from the last run's
    cursor) and mark those whose hash says dirty; returns how many were marked.

    A full pass over N circuits takes about N / ``budget_keys`` runs. On Redis Cluster, SCAN
    walks one node: each primary is scanned with a cursor of its own.
    """
    prefix = re.sub(r"([*?\[\]\\])", r"\\\1", get_settings().redis_prefix)
    found: list[bytes | str] = []
    nodes = primaries(client)
    for name, node in nodes:  # a Cluster's SCAN walks one node: one cursor per primary
        cursor_key = key(CURSOR_KIND, name or "all")
        raw_cursor = client.get(cursor_key)
        cursor = int(raw_cursor) if raw_cursor else 0
        seen = 0
        while seen < budget_keys // len(nodes) + 1:
            cursor, batch = node.scan(cursor=cursor, match=prefix + "circuit:*", count=1000)
            found += batch
            seen += 1000
            if cursor == 0:
                break
        client.set(cursor_key, cursor)
    if not found:
        return 0
    pipe = client.pipeline(transaction=False)
    for raw_key in found:
        pipe.hmget(raw_key, ["store_id", "business_id", "circuit_name", "dirty"])
    members = []
    for store, business, name, dirty in pipe.execute():
        if name is not None and dirty == b"1":
            members.append(
                f"{decode_text(store or b'')}|{decode_text(business or b'')}|{decode_text(name)}"
            )
    if members:
        client.sadd(dirty_key(), *members)
    return len(members)
