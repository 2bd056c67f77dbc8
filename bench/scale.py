"""Beat at scale: one run of each periodic task at 1,000 / 10,000 (quick) and 100,000 stores.

Each scale is a process of its own (``bench.scale_run``) on a fresh, migrated database and its own
Redis prefix, seeded in bulk with what one period of traffic leaves behind (see that module). A
task's figure is the wall time of one run, done in that process as a worker would; its peer is
the task's own Beat period (``beat_schedule``), so the ratio is the share of its period one run
takes. Goal (issue 13): at most 0.2 at the largest scale. The peer is a constant, so the rounds
are the task's runs at the largest scale (measured before the harness asks for them, since a
scale is seeded once for all five tasks); the notes give the whole curve: seconds per run and
microseconds per store at every scale, which must fall or stay flat as stores grow.

``python -m bench.scale [--full]`` prints the curve as a Markdown table (docs/scaling.md).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from functools import cache

import redis
from sqlalchemy import create_engine, make_url, text

from beat_schedule import (
    CHECK_SUBSCRIPTION_HEALTH_EVERY_S,
    COLLECT_METRICS_EVERY_S,
    MIRROR_SAFEGUARDS_EVERY_S,
    RECONCILE_STORES_EVERY_S,
    RENEW_SUBSCRIPTIONS_EVERY_S,
)
from bench.harness import Benchmark, Pair
from syncguard.migrate import upgrade
from syncguard.services import ensure_services
from syncguard.settings import get_settings

#: Stores per scale: quick, full.
SCALES = {True: (1_000, 10_000), False: (1_000, 10_000, 100_000)}
#: Runs of each task per scale (BENCH_SCALE_RUNS overrides: a 100,000-store run takes long).
RUNS = int(os.environ.get("BENCH_SCALE_RUNS", "3"))
#: Each Beat task and its period, seconds.
PERIODS = {
    "mirror_safeguard_state": MIRROR_SAFEGUARDS_EVERY_S,
    "check_subscription_health": CHECK_SUBSCRIPTION_HEALTH_EVERY_S,
    "reconcile_stores": RECONCILE_STORES_EVERY_S,
    "renew_expiring_subscriptions": RENEW_SUBSCRIPTIONS_EVERY_S,
    "collect_metrics": COLLECT_METRICS_EVERY_S,
}
#: Longest a scale may take to seed, seconds.
SEED_TIMEOUT_S = 1_800.0


def _measure_scale(stores: int) -> dict[str, list[float]]:
    """Seed ``stores`` stores in a fresh database and Redis prefix; RUNS timed runs per task."""
    urls = ensure_services(get_settings())
    admin = create_engine(urls.database_url, isolation_level="AUTOCOMMIT")
    tag = uuid.uuid4().hex[:10]
    name, prefix = f"syncguard_bench_scale_{tag}", f"bench-scale-{tag}:"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(urls.database_url).set(database=name).render_as_string(hide_password=False)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_URL": urls.redis_url,
        "SYNCGUARD_REDIS_PREFIX": prefix,
    }
    env.pop("SYNCGUARD_BROKER_URL", None)  # the broker's keys under the same prefix
    proc: subprocess.Popen[str] | None = None
    try:
        upgrade(url)
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.scale_run", str(stores)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        lines = _lines(proc)
        next(lines)  # ready: seeded
        print(f"scale {stores:,}: seeded", file=sys.stderr, flush=True)
        times: dict[str, list[float]] = {task: [] for task in PERIODS}
        for _ in range(RUNS):
            for task in PERIODS:
                assert proc.stdin is not None
                proc.stdin.write(f"run {task}\n")
                proc.stdin.flush()
                answer = json.loads(next(lines))
                times[task].append(float(answer["s"]))
                print(f"scale {stores:,}: {task} {answer}", file=sys.stderr, flush=True)
        return times
    finally:
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()  # end of commands: it stops its worker and exits
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        _drop_prefix(urls.redis_url, prefix)


def _lines(proc: subprocess.Popen[str]) -> Iterator[str]:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            yield line
    raise RuntimeError(f"bench.scale_run exited with {proc.wait()}")


def _drop_prefix(redis_url: str, prefix: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        batch = []
        for found in client.scan_iter(match=prefix + "*", count=10_000):
            batch.append(found)
            if len(batch) >= 10_000:
                client.delete(*batch)
                batch = []
        if batch:
            client.delete(*batch)


@cache
def curve(quick: bool) -> dict[int, dict[str, list[float]]]:
    """Seconds per run of each task at each scale (measured once per process and mode)."""
    return {stores: _measure_scale(stores) for stores in SCALES[quick]}


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _notes(task: str, quick: bool) -> dict[str, str]:
    notes = {}
    for stores, times in curve(quick).items():
        run_s = _median(times[task])
        notes[f"{stores:,} stores"] = f"{run_s:.3f} s ({run_s / stores * 1e6:.1f} µs/store)"
    return notes


def _benchmark(task: str) -> Benchmark:
    period = PERIODS[task]

    def setup(quick: bool) -> Pair:
        top = SCALES[quick][-1]
        runs = itertools.cycle(curve(quick)[top][task])  # the harness may ask for more than RUNS
        pair = Pair(ours=lambda: next(runs), peer=lambda: period)
        pair.notes.update({"largest scale": f"{top:,} stores", **_notes(task, quick)})
        return pair

    return Benchmark(
        name=f"scale: {task} run / period",
        unit="s",
        peer_name=f"period {period:g} s",
        goal=0.2,
        setup=setup,
        lower_is_better=True,
    )


BENCHMARKS = [_benchmark(task) for task in PERIODS]


def table(quick: bool) -> str:
    """The curve as Markdown: seconds per run, share of the period, µs per store."""
    scales = SCALES[quick]
    head = "| task (period) | " + " | ".join(f"{s:,} stores" for s in scales) + " |"
    lines = [head, "|---" * (len(scales) + 1) + "|"]
    for task, period in PERIODS.items():
        cells = []
        for stores in scales:
            run_s = _median(curve(quick)[stores][task])
            cells.append(
                f"{run_s:.3f} s = {run_s / period:.1%} ({run_s / stores * 1e6:.0f} µs/store)"
            )
        lines.append(f"| `{task}` ({period:g} s) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    # --full: 1k, 10k and 100k; --only N: that one scale.
    if "--only" in sys.argv:
        SCALES[True] = (int(sys.argv[sys.argv.index("--only") + 1]),)
    print(table(quick="--full" not in sys.argv))
