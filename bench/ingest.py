"""Sync ingest, messages/s: the product against a naive per-row ORM loop, like for like.

Two comparisons, each with the same work on both sides (``bench.ingest_run`` has the modes):

- ``<provider> sync ingest``: each provider's benchmark seeds an emulator (its own process)
  with the mailbox, then alternates rounds. Ours is a full sync of it by ``SyncRun`` (guard
  with the store's limits raised, the real adapter over HTTP, each page committed with its
  checkpoint); the peer is the naive product: the same adapter, page size and Gmail batching
  over HTTP against the same emulator, without a guard, then one ORM ``INSERT`` per message
  and a commit per page. Both fetch; the difference is the guard, the write and the checkpoint.
- ``ingest write path``: the database write alone, no provider calls on either side: ours
  writes pre-built pages of 500 with ``upsert_messages`` (a transaction a page), the peer the
  same rows with one ORM ``INSERT`` each and a commit per 100. Issue 12's "naive per-row ORM
  insert loop" was this write-only loop while ours included the HTTP fetching: that ratio
  compared a fetch-and-write with a write, so each is now measured against its like.

The fetching alone (``fetch``: the unguarded adapter's listing, nothing written) bounds both
sides' sync and is in the notes: through this emulator on a 2-core machine it ran ~6,800 msgs/s
for Gmail and ~13,500 for Outlook (2026-12-01), so a sync cannot reach 10x a naive product that
fetches the same way; the write path is where one statement per page shows (>= 10x).
PostgreSQL ``COPY`` of the rows (measured once) and each contestant's peak RSS are in the
notes. Ours syncs 5,000 messages in quick mode and 100,000 in the full run; a naive loop is a
rate, linear in the rows, so it writes at most 2,000 rows a round in quick mode and 10,000 in
the full run (100,000 would take it minutes). Every round is a process of its own on a
database of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable

from sqlalchemy import create_engine, make_url, text

from bench.harness import Benchmark, Pair
from syncguard.migrate import upgrade
from syncguard.services import ensure_services
from syncguard.settings import get_settings

QUICK_COUNT, FULL_COUNT = 5_000, 100_000
#: Most rows the naive peer writes a round: quick, full.
NAIVE_MAX = {True: 2_000, False: 10_000}


def _database() -> tuple[str, Callable[[], None]]:
    """A fresh, migrated database and how to drop it."""
    urls = ensure_services(get_settings())
    admin = create_engine(urls.database_url, isolation_level="AUTOCOMMIT")
    name = f"syncguard_bench_ingest_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(urls.database_url).set(database=name).render_as_string(hide_password=False)
    upgrade(url)

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


def _measure(env: dict[str, str], mode: str, provider: str, count: int) -> dict[str, float]:
    command = [sys.executable, "-m", "bench.ingest_run", mode, provider, str(count)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ingest_run {mode} {provider} failed: {done.stderr[-2000:]}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def _setup(provider: str, modes: tuple[str, str] = ("sync", "naive")) -> Callable[[bool], Pair]:
    """Rounds of ``modes`` (ours, peer) of ``bench.ingest_run`` on one seeded emulator."""
    ours_mode, peer_mode = modes

    def setup(quick: bool) -> Pair:
        count = QUICK_COUNT if quick else FULL_COUNT
        db_url, drop = _database()
        emulator = subprocess.Popen(
            [sys.executable, "-m", "bench.ingest_emulator", provider, str(count)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert emulator.stdout is not None
        line = emulator.stdout.readline()
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "BENCH_EMULATOR": line,
            "SYNCGUARD_REDIS_PREFIX": f"benchingest{uuid.uuid4().hex[:8]}:",
        }
        notes: dict[str, str] = {}
        rss: dict[str, list[float]] = {ours_mode: [], peer_mode: []}

        def contestant(mode: str) -> Callable[[], float]:
            def measure() -> float:
                rows = count if mode == ours_mode else min(count, NAIVE_MAX[quick])
                figures = _measure(env, mode, provider, rows)
                rss[mode].append(figures["rss_mb"])
                notes[f"peak RSS {mode} ({rows:,} msgs), MiB"] = f"{max(rss[mode]):.0f}"
                if mode == peer_mode and "COPY msgs/s" not in notes:  # the ceiling, measured once
                    copy = _measure(env, "copy", provider, rows)
                    notes["COPY msgs/s"] = f"{copy['rate']:,.0f}"
                    if mode == "naive":  # the fetching alone: what bounds both sides' sync
                        fetch = _measure(env, "fetch", provider, count)
                        notes["fetch only (no guard, no write) msgs/s"] = f"{fetch['rate']:,.0f}"
                return figures["rate"]

            return measure

        def close() -> None:
            emulator.kill()
            emulator.wait()
            drop()

        notes["messages"] = f"{count:,}"
        return Pair(contestant(ours_mode), contestant(peer_mode), close, notes)

    return setup


BENCHMARKS = [
    *(
        Benchmark(
            name=f"{provider} sync ingest",
            unit="msgs/s",
            peer_name="naive product (same adapter, per-row ORM insert)",
            goal=10.0,
            setup=_setup(provider),
        )
        for provider in ("gmail", "outlook")
    ),
    Benchmark(
        name="ingest write path (no fetching)",
        unit="msgs/s",
        peer_name="naive per-row ORM insert loop",
        goal=10.0,
        setup=_setup("gmail", ("write", "insert")),
    ),
]
