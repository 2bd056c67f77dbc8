"""One scale of ``bench.scale``, in a process of its own: ``python -m bench.scale_run STORES``.

Runs against DATABASE_URL (a fresh, migrated database the parent made) and Redis under
SYNCGUARD_REDIS_PREFIX (also the broker's keys). Seeds STORES stores in bulk (INSERT ... SELECT
generate_series), then answers commands on stdin, one JSON line each on stdout:

- ``run TASK``: prepare the state one period of traffic leaves (untimed), then run the Beat task
  TASK once, in this process, as a worker would (``{"s": seconds, "result": ...}``). A task that
  fans its work out (health check, reconciliation) is timed until every chunk it sent has
  finished on the worker this process starts (``-Q maintenance``, ``WORKER_CONCURRENCY``
  processes), i.e. one run is all of its work.

What one period of traffic leaves (the "realistic share"): ``ACTIVE_SHARE`` of the stores made
a provider call since the last mirror (their circuit and limiter usage changed); stores last
synced uniformly over the reconciliation interval (so one run finds 1/RECONCILE_SLICES stale);
subscriptions expire uniformly over their lifetime; three inbound deliveries per store in the
health window (one in ten failed) and five older ones; two finished syncs per store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from celery.result import AsyncResult
from sqlalchemy import text

from models.enums import Provider
from safeguards.circuit_breaker.breaker import SCRIPT, CircuitBreaker
from safeguards.circuit_breaker.states import CircuitId
from safeguards.rate_limit.limiter import check_rate_limit
from safeguards.redis_state import get_redis
from syncguard.db import get_engine
from syncguard.settings import get_settings
from tasks import app
from tasks.maintenance import collect_metrics, heartbeat, mirror_safeguard_state
from tasks.queues import MAINTENANCE
from tasks.renewal import check_subscription_health, renew_expiring_subscriptions
from tasks.sync.reconcile import reconcile_stores

#: Share of stores whose safeguard state changed within one mirror period (5 s).
ACTIVE_SHARE = 0.05
#: Stores per business.
STORES_PER_BUSINESS = 100
#: Processes of the maintenance worker that runs fanned-out chunks (I/O-bound: above the cores).
WORKER_CONCURRENCY = 4
#: Longest wait for one chunk, seconds.
CHUNK_TIMEOUT_S = 900.0

_SEED = [
    """INSERT INTO businesses (name, slug)
       SELECT 'bench ' || i, 'bench-' || i FROM generate_series(1, :businesses) AS i""",
    """INSERT INTO stores (business_id, provider, mailbox_address, credentials_encrypted,
                          sync_cursor, status, last_synced_at)
       SELECT b.id, CASE WHEN i % 2 = 0 THEN 'gmail' ELSE 'outlook' END,
              'box' || i || '@bench.test', '\\x00'::bytea, 'cursor-' || i, 'active',
              now() - random() * make_interval(secs => :interval_s)
       FROM generate_series(1, :stores) AS i
       JOIN (SELECT id, row_number() OVER (ORDER BY id) AS n FROM businesses) b
         ON b.n = 1 + i % :businesses""",
    # Expiry uniform from just inside the renewal window (one renewal period) to a full lifetime.
    """INSERT INTO webhook_subscriptions (store_id, provider, provider_subscription_id, resource,
                                         expires_at, status, last_renewed_at, last_notification_at)
       SELECT s.id, s.provider, 'sub-' || s.id, 'me/messages',
              now() + make_interval(secs => w.before - :renew_every_s
                                    + random() * (w.lifetime - w.before + :renew_every_s)),
              'active', now() - random() * make_interval(secs => :gmail_after_s * 0.9),
              now() - random() * interval '1 hour'
       FROM stores s
       JOIN (VALUES ('gmail', :gmail_before_s, 7 * 86400.0),
                    ('outlook', :graph_before_s, :graph_lifetime_s))
            AS w(provider, before, lifetime) ON w.provider = s.provider""",
    """INSERT INTO webhook_delivery_log (store_id, webhook_type, direction, success,
                                        error_message, created_at)
       SELECT s.id, 'notification', 'inbound', k % 10 <> 0 OR k > 3,
              CASE WHEN k % 10 = 0 AND k <= 3 THEN 'timeout' END,
              CASE WHEN k <= 3 THEN now() - random() * interval '50 minutes'
                   ELSE now() - interval '2 hours' - random() * interval '5 days' END
       FROM stores s CROSS JOIN generate_series(1, 8) AS k""",
    """INSERT INTO sync_jobs (store_id, kind, trigger, status, checkpoint, messages_upserted,
                             created_at, started_at, finished_at)
       SELECT s.id, 'incremental', 'webhook', 'succeeded', '{}'::jsonb, k,
              now() - k * interval '1 hour', now() - k * interval '1 hour',
              now() - k * interval '1 hour' + interval '2 seconds'
       FROM stores s CROSS JOIN generate_series(1, 2) AS k""",
    # As the owner (the service role may not ANALYZE): autovacuum would, minutes later.
    "ANALYZE",
]


class World:
    """The seeded database and Redis of one scale."""

    def __init__(self, stores: int) -> None:
        settings = get_settings()
        self.stores = stores
        self.engine = get_engine()
        params = {
            "stores": stores,
            "businesses": max(1, stores // STORES_PER_BUSINESS),
            "interval_s": settings.reconciliation_interval_s,
            "renew_every_s": 300.0,
            "gmail_after_s": float(settings.gmail_watch_renew_after_s),
            "gmail_before_s": float(settings.gmail_watch_renew_before_s),
            "graph_before_s": float(settings.graph_renew_before_s),
            "graph_lifetime_s": settings.graph_subscription_lifetime_min * 60.0,
        }
        with get_engine(role="").begin() as conn:  # the owner: may ANALYZE, like autovacuum
            for sql in _SEED:
                conn.execute(text(sql), params)
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT id, provider FROM stores ORDER BY id")).all()
        self.ids = [(row.id, Provider(row.provider)) for row in rows]
        self.redis = get_redis()
        self.breaker = CircuitBreaker(self.redis)
        self._record_circuits(self.ids)  # every store has a circuit: the backstop scan walks them
        while sum(self.mirror().values()):  # the seeded state mirrored: runs see one period's
            pass
        self.turn = 0

    def _record_circuits(self, stores: list[tuple[uuid.UUID, Provider]]) -> None:
        """One success per store's provider circuit, pipelined 1,000 at a time."""
        script = SCRIPT.on(self.redis)
        for start in range(0, len(stores), 1_000):
            pipe = self.redis.pipeline(transaction=False)
            for sid, provider in stores[start : start + 1_000]:
                circuit = CircuitId(sid, f"{provider.value}_api")
                keys, args = self.breaker.script_call(circuit, "success", brief=True)
                script(keys=keys, args=args, client=pipe)
            pipe.execute()

    def traffic(self) -> None:
        """One period of traffic: ACTIVE_SHARE of the stores call their provider."""
        count = max(1, int(self.stores * ACTIVE_SHARE))
        offset = (self.turn * count) % len(self.ids)
        self.turn += 1
        active = (self.ids + self.ids)[offset : offset + count]
        self._record_circuits(active)
        for sid, provider in active:
            check_rate_limit(sid, "bench", provider=provider, cost=1)

    def mirror(self) -> Any:
        return mirror_safeguard_state()

    def fresh_reconciliation(self) -> None:
        """Forget the last run's requests (its queued jobs, pending markers and messages) and
        spread the last syncs over the interval again, as of now (the bench takes minutes)."""
        with self.engine.begin() as conn:
            conn.execute(text("DELETE FROM sync_jobs WHERE trigger = 'reconciliation'"))
            conn.execute(
                text(
                    "UPDATE stores SET last_synced_at ="
                    " now() - random() * make_interval(secs => :interval_s)"
                ),
                {"interval_s": get_settings().reconciliation_interval_s},
            )
        self._delete(["sync:*", "sync", "sync\x06*"])

    def fresh_renewals(self) -> None:
        """Forget the last run's renewal markers and messages."""
        self._delete(["subscription-*", "webhooks", "webhooks\x06*"])

    def _delete(self, patterns: list[str]) -> None:
        prefix = get_settings().redis_prefix
        for pattern in patterns:
            found = list(self.redis.scan_iter(match=prefix + pattern, count=10_000))
            for start in range(0, len(found), 10_000):
                self.redis.delete(*found[start : start + 10_000])


def _fanned_out(beat_task: Callable[[], Any]) -> Callable[[], Any]:
    """Beat's run, then a wait for every chunk it sent: the run's whole work."""

    def run() -> Any:
        sent = beat_task()
        for chunk in sent["chunks"]:
            AsyncResult(chunk, app=app).get(timeout=CHUNK_TIMEOUT_S, propagate=True)
        return {k: v for k, v in sent.items() if k != "chunks"} | {"chunks": len(sent["chunks"])}

    return run


def _start_worker() -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q", MAINTENANCE]
    command += ["-c", str(WORKER_CONCURRENCY), "--without-gossip", "--without-mingle"]
    worker = subprocess.Popen([*command, "-l", "warning"], env=os.environ.copy())
    heartbeat.apply_async(queue=MAINTENANCE).get(timeout=120)  # it is consuming
    return worker


def _tasks(world: World) -> dict[str, tuple[Callable[[], None], Callable[[], Any]]]:
    """Each Beat task: how to prepare one period's state (untimed), and its one run."""
    return {
        "mirror_safeguard_state": (world.traffic, world.mirror),
        "check_subscription_health": (lambda: None, _fanned_out(check_subscription_health)),
        "reconcile_stores": (world.fresh_reconciliation, _fanned_out(reconcile_stores)),
        "renew_expiring_subscriptions": (world.fresh_renewals, renew_expiring_subscriptions),
        "collect_metrics": (lambda: None, collect_metrics),
    }


def main() -> None:
    """Seed, say ready, then time one run per ``run TASK`` line."""
    world = World(int(sys.argv[1]))
    tasks = _tasks(world)
    worker = _start_worker()
    try:
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            verb, _, name = line.strip().partition(" ")
            if verb != "run":
                continue
            prepare, run = tasks[name]
            prepare()
            started = time.perf_counter()
            result = run()
            elapsed = time.perf_counter() - started
            summary = len(result) if isinstance(result, list) else result
            print(json.dumps({"s": elapsed, "result": summary}, default=str), flush=True)
    finally:
        worker.terminate()
        worker.wait(timeout=60)


if __name__ == "__main__":
    main()
