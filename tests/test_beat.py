"""DedupingScheduler: the claim's Lua with explicit times, and two real Beats running at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.beat import ScheduleEntry
from celery.schedules import crontab, schedule

from tasks import app
from tasks.beat import DedupingScheduler, claim_run, entry_period_s, release_run
from tasks.queues import MAINTENANCE
from tests.worker import stop

#: The heartbeat's period while two Beats run, seconds.
HEARTBEAT_S = 2.0
#: How long both Beats run together, seconds.
RUN_S = 10.0
#: The second Beat starts this much later, so the two run out of phase, seconds.
PHASE_OFFSET_S = 1.1
#: How long a Beat may take to start, seconds.
START_TIMEOUT_S = 30.0
HEARTBEAT_TASK = "tasks.maintenance.heartbeat"
MIRROR_TASK = "tasks.maintenance.mirror_safeguard_state"
#: The mirror entry's period in beat_schedule.py, seconds.
MIRROR_S = 5.0
SKIP_LINE = "already ran this period"


def _entry_name() -> str:
    return f"test-entry-{uuid.uuid4().hex[:8]}"


# --- the claim (Lua) with explicit times ---


def test_a_second_claim_within_ninety_percent_of_the_period_is_refused(
    redis_client: redis.Redis,
) -> None:
    name = _entry_name()
    assert claim_run(redis_client, name, 10.0, now_s=1000.0) == 1_000_000
    assert claim_run(redis_client, name, 10.0, now_s=1000.0) is None  # the other Beat, same tick
    assert claim_run(redis_client, name, 10.0, now_s=1008.9) is None
    assert claim_run(redis_client, name, 10.0, now_s=1009.0) == 1_009_000  # 0.9 x 10 s later
    assert claim_run(redis_client, name, 10.0, now_s=1018.0) == 1_018_000


def test_two_beats_straddling_a_period_boundary_run_once(redis_client: redis.Redis) -> None:
    # floor(now / period) would give these two calls different buckets, and both would run.
    name = _entry_name()
    assert claim_run(redis_client, name, 10.0, now_s=1019.9) is not None
    assert claim_run(redis_client, name, 10.0, now_s=1020.1) is None


def test_out_of_phase_beats_settle_on_one_run_per_period(redis_client: redis.Redis) -> None:
    # Beat A ticks at 0, 10, 20...; Beat B at 3, 13, 23...: only A's ticks run.
    name = _entry_name()
    ran = []
    for period in range(5):
        for offset in (0.0, 3.0):
            at = 5000.0 + period * 10.0 + offset
            if claim_run(redis_client, name, 10.0, now_s=at) is not None:
                ran.append(at)
    assert ran == [5000.0, 5010.0, 5020.0, 5030.0, 5040.0]


def test_a_claim_from_a_clock_ahead_counts_as_recent(redis_client: redis.Redis) -> None:
    name = _entry_name()
    assert claim_run(redis_client, name, 10.0, now_s=2005.0) is not None
    assert claim_run(redis_client, name, 10.0, now_s=2000.0) is None


def test_a_released_claim_lets_the_period_run_again(redis_client: redis.Redis) -> None:
    name = _entry_name()
    claimed = claim_run(redis_client, name, 10.0, now_s=3000.0)
    assert claimed is not None
    assert release_run(redis_client, name, claimed - 1) is False  # not the latest claim
    assert release_run(redis_client, name, claimed) is True
    assert claim_run(redis_client, name, 10.0, now_s=3000.5) is not None


def test_the_claim_key_carries_the_prefix_and_expires(redis_client: redis.Redis) -> None:
    name = _entry_name()
    claim_run(redis_client, name, 100.0, now_s=time.time())
    claim_key = f"{os.environ['SYNCGUARD_REDIS_PREFIX']}beat:{{{name}}}:last_run"
    assert 0 < redis_client.pttl(claim_key) <= 300_000  # three periods


def test_the_period_of_an_interval_and_of_a_crontab() -> None:
    assert entry_period_s(schedule(timedelta(seconds=45))) == 45.0
    assert entry_period_s(schedule(7.5)) == 7.5
    assert entry_period_s(crontab(minute="*/5")) == 60.0  # crontab's one-minute granularity


# --- the scheduler's decisions ---


class _Recording(DedupingScheduler):
    """Records what it would publish instead of publishing (the decision is under test)."""

    def __init__(self, client: redis.Redis, *args: Any, **kwargs: Any) -> None:
        self._client = client
        self.published: list[str] = []
        super().__init__(*args, **kwargs)

    def claim_client(self) -> redis.Redis:
        return self._client

    def apply_async(self, entry: ScheduleEntry, **_: Any) -> None:
        self.published.append(entry.name)


def _scheduler(tmp_path: Path, client: redis.Redis) -> _Recording:
    filename = str(tmp_path / f"schedule-{uuid.uuid4().hex[:6]}")
    return _Recording(client, app=app, schedule_filename=filename, lazy=True)


def _entry(name: str) -> ScheduleEntry:
    return ScheduleEntry(name=name, task=HEARTBEAT_TASK, schedule=schedule(60.0), app=app)


def test_the_second_scheduler_skips_what_the_first_published(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    first, second = _scheduler(tmp_path, redis_client), _scheduler(tmp_path, redis_client)
    entry = _entry(_entry_name())
    first.apply_entry(entry)
    second.apply_entry(entry)
    assert (first.published, second.published) == ([entry.name], [])


def test_an_unreachable_claim_store_still_publishes(tmp_path: Path) -> None:
    # Port 1 refuses connections: the claim fails and the entry is published anyway.
    unreachable = redis.Redis(port=1, socket_connect_timeout=0.5)
    scheduler = _scheduler(tmp_path, unreachable)
    entry = _entry(_entry_name())
    scheduler.apply_entry(entry)
    assert scheduler.published == [entry.name]


# --- two real Beats at once ---


@contextmanager
def _beat(tmp_path: Path, label: str, env: dict[str, str]) -> Iterator[Path]:
    log_path = tmp_path / f"beat-{label}.log"
    argv = [sys.executable, "-m", "celery", "-A", "tasks", "beat", "-l", "debug"]
    argv += ["-s", str(tmp_path / f"schedule-{label}"), "--pidfile", str(tmp_path / f"{label}.pid")]
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while "beat: Starting" not in log_path.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"beat {label} did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        yield log_path
    finally:
        stop(proc)


def _published(client: redis.Redis, queue_key: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for raw in client.lrange(queue_key, 0, -1):
        task = json.loads(raw)["headers"]["task"]
        counts[task] = counts.get(task, 0) + 1
    return counts


@pytest.mark.slow
def test_two_beats_at_once_publish_each_entry_once_per_period(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    # Given two Beats out of phase, under a prefix of their own, with a 2 s heartbeat entry
    prefix = f"{os.environ['SYNCGUARD_REDIS_PREFIX']}two-beats-{uuid.uuid4().hex[:6]}:"
    env = {**os.environ, "SYNCGUARD_REDIS_PREFIX": prefix}
    env["SYNCGUARD_HEARTBEAT_EVERY_S"] = str(HEARTBEAT_S)
    # When they run together (nothing consumes the queue, so every publication stays in it)
    with _beat(tmp_path, "a", env) as log_a:
        started = time.monotonic()
        time.sleep(PHASE_OFFSET_S)
        with _beat(tmp_path, "b", env) as log_b:
            # Together for the rest of RUN_S counted from b's start, not a's: on a loaded
            # machine b can take seconds to start and was otherwise live too briefly to skip.
            time.sleep(RUN_S - PHASE_OFFSET_S)
        ran_s = time.monotonic() - started
    counts = _published(redis_client, f"{prefix}{MAINTENANCE}")
    skips = log_a.read_text().count(SKIP_LINE) + log_b.read_text().count(SKIP_LINE)
    sys.stderr.write(f"[two beats over {ran_s:.1f}s: published {counts}, skipped {skips}]\n")
    # Then each entry ran once per period (two Beats would publish about twice as many)
    assert 2 <= counts.get(HEARTBEAT_TASK, 0) <= ran_s / HEARTBEAT_S + 1
    assert counts.get(MIRROR_TASK, 0) <= ran_s / MIRROR_S + 1
    # ...and the second Beat was live: its due runs were skipped, not absent
    assert skips >= 2
