"""The processes bench/receiver.py starts beside the real API: a bare receiver and two workers.

- ``bare`` — what a user would otherwise write: a FastAPI handler that only calls ``.delay()``
  on a stock Celery app (``uvicorn bench.receiver_apps:bare``);
- ``bare_worker`` — a stock Celery worker running that task;
- ``ours_worker`` — a Celery worker on syncguard's broker, prefix and ``sync`` queue whose
  ``tasks.sync.sync_store`` only records when it started: the receiver is measured, not a sync.

Both workers push ``time.time()`` at task start onto ``<BENCH_STARTS_KEY>:<id>`` in Redis (the
id is the store id for ours, the body's id for the bare one), where the sender BLPOPs it.
Configured by environment: REDIS_URL, BROKER_URL, SYNCGUARD_REDIS_PREFIX, BENCH_STARTS_KEY,
BENCH_BARE_QUEUE. Imports neither ``tasks`` nor ``api``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery
from fastapi import FastAPI
from kombu.entity import Exchange, Queue

_STARTS = os.environ.get("BENCH_STARTS_KEY", "bench:starts")
_BARE_QUEUE = os.environ.get("BENCH_BARE_QUEUE", "bench_bare")
_REDIS = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
_BROKER = os.environ.get("BROKER_URL") or _REDIS
_PREFIX = os.environ.get("SYNCGUARD_REDIS_PREFIX", "syncguard:")

_client: redis.Redis | None = None


def _started(key: str) -> None:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(_REDIS)
    _client.rpush(f"{_STARTS}:{key}", repr(time.time()))


# --- the bare peer: a stock Celery app and a FastAPI handler that only calls .delay() ---
bare_worker = Celery("bare", broker=_BROKER)
bare_worker.conf.task_default_queue = _BARE_QUEUE
bare_worker.conf.broker_connection_retry_on_startup = True


@bare_worker.task(name="bench.bare")  # type: ignore[untyped-decorator]
def bare_task(key: str) -> None:
    """The bare receiver's task: record its start."""
    _started(key)


bare = FastAPI()


@bare.post("/notify", status_code=202)
def notify(body: dict[str, Any]) -> dict[str, bool]:
    """Enqueue the task and acknowledge: the least a receiver can do."""
    bare_task.delay(str(body["id"]))
    return {"accepted": True}


# --- our side's worker: syncguard's broker keys and sync queue, a sync task that only records ---
ours_worker = Celery("ours-bench", broker=_BROKER)
ours_worker.conf.update(
    broker_transport_options={"global_keyprefix": _PREFIX},
    task_queues=(Queue("sync", Exchange("sync", type="direct"), routing_key="sync"),),  # type: ignore[no-untyped-call]
    task_default_queue="sync",
    broker_connection_retry_on_startup=True,
    accept_content=["json"],
)


@ours_worker.task(name="tasks.sync.sync_store")  # type: ignore[untyped-decorator]
def sync_store(store_id: str, job_id: str | None = None) -> None:
    """Stands in for the real sync task: records that the sync would start now."""
    _started(store_id)
