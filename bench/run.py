"""``make bench``: every benchmark against its peer in one run; writes docs/benchmarks.md.

``BENCH_QUICK=1`` runs fewer, smaller rounds (under three minutes) and prints one line per
benchmark with its ratio and its goal; the full run also rewrites ``docs/benchmarks.md``.
``BENCH_ONLY=substring`` runs the benchmarks whose name contains it. Servers: DATABASE_URL and
REDIS_URL (the embedded ones when unset, started by ``syncguard up``).
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import Benchmark, Result, run

#: Benchmark modules, in the order of the issue's table; each exposes BENCHMARKS.
MODULES = [
    "bench.rate_limit",
    "bench.guard",
    "bench.global_limit",
    "bench.tasks",
    "bench.receiver",
    "bench.ingest",
    "bench.worker_memory",
    "bench.scale",
]
#: Interleaved rounds per benchmark (median of the per-round ratios).
ROUNDS_FULL = 7
ROUNDS_QUICK = 3
REPORT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
#: What limits each missed goal, with its profile: kept by hand, appended to the report.
LIMITS = Path(__file__).resolve().parent / "limits.md"


def _benchmarks(only: str | None) -> list[Benchmark]:
    found: list[Benchmark] = []
    for name in MODULES:
        found += importlib.import_module(name).BENCHMARKS
    return [b for b in found if only is None or only in b.name]


def _machine() -> str:
    cores = os.cpu_count()
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{when}; {cores} cores, {mem_kb / 2**20:.0f} GiB; load average {load} at the end; "
        f"Python {platform.python_version()}"
    )


def _report(results: list[Result], failures: list[str]) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (the full run); each row is ours against a peer in the same run,",
        "the ratio the median of interleaved rounds. Regenerate with `make bench`.",
        "",
        f"Machine: {_machine()}",
        "",
        "| benchmark | ours | peer | unit | ratio | goal | met | rounds | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        sign = "≤" if r.bench.lower_is_better else "≥"
        notes = "; ".join(f"{k}: {v}" for k, v in r.notes.items())
        lines.append(
            f"| {r.bench.name} | {r.ours:,.1f} | {r.bench.peer_name}: {r.peer:,.1f} | "
            f"{r.bench.unit} | {r.ratio:.2f} | {sign} {r.bench.goal:g} | "
            f"{'yes' if r.met else '**no**'} | {r.rounds} | {notes} |"
        )
    if failures:
        lines += ["", "Benchmarks that could not run:", ""] + [f"- {f}" for f in failures]
    return "\n".join(lines) + "\n\n" + LIMITS.read_text()


def main() -> int:
    """Run every benchmark; print one line each; the full run writes the report."""
    quick = os.environ.get("BENCH_QUICK") == "1"
    only = os.environ.get("BENCH_ONLY")
    rounds = ROUNDS_QUICK if quick else ROUNDS_FULL
    results: list[Result] = []
    failures: list[str] = []
    for bench in _benchmarks(only):
        try:
            result = run(bench, quick=quick, rounds=rounds)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            failures.append(f"{bench.name}: {type(exc).__name__}: {exc}")
            print(f"{bench.name}: FAILED ({type(exc).__name__}: {exc})", flush=True)
            continue
        results.append(result)
        print(result.line(), flush=True)
    if not quick and only is None:
        REPORT.write_text(_report(results, failures))
        print(f"wrote {REPORT}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
