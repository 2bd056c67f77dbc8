"""The emulator's Graph delta round at 10,000 and 100,000 messages (``-m bench.emulator_delta``).

Issue 13 point 5: the test double must cost less than the product. Seeds a mailbox straight into
the emulator's state (as ``bench.ingest_emulator``), then serves one full delta round the way the
route does it: ``_changes`` for each page and the page's JSON body rendered by Starlette's
``JSONResponse``. Prints microseconds per message at each size: flat means linear (a round was
quadratic when every page re-read the whole mailbox), and the figure is to be compared with the
product's Outlook ingest, about 200 µs per message (5,068 msgs/s, README's benchmark table).

``--vs-product N`` is the same-run comparison: one real product sync of N Outlook messages
(``bench.ingest_run sync``) against the emulator process serving it, in CPU seconds each.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
import uuid

from starlette.responses import JSONResponse

from bench.ingest import _database
from bench.ingest_emulator import ADDRESS, seed
from providers.emulator.app import create_app
from providers.emulator.context import EmulatorContext
from providers.emulator.graph import _changes
from providers.emulator.state import Provider

#: Messages per delta page (Graph's odata.maxpagesize as the product asks for it).
PAGE = 100


def round_us_per_message(count: int) -> float:
    """Microseconds per message of one full delta round over ``count`` messages."""
    app = create_app()
    ctx: EmulatorContext = app.state.emulator
    seed(ctx, Provider.OUTLOOK, count)
    box = ctx.state.mailbox(ADDRESS)
    started = time.perf_counter()
    after, served = 0, 0
    while after < box.seq:
        items, after = _changes(box, "inbox", None, after, box.seq, PAGE)
        JSONResponse({"value": items}).render({"value": items})
        served += len(items)
    elapsed = time.perf_counter() - started
    assert served == count, (served, count)
    return elapsed / count * 1e6


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def versus_product(count: int) -> dict[str, float]:
    """CPU seconds of the emulator serving one product sync of ``count`` Outlook messages, and
    of the product doing it (``bench.ingest_run sync``, the real adapter, guard and database)."""
    db_url, drop = _database()
    emulator = subprocess.Popen(
        [sys.executable, "-m", "bench.ingest_emulator", "outlook", str(count)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert emulator.stdout is not None
        line = emulator.stdout.readline()  # seeded and listening
        seeded_cpu = _cpu_s(emulator.pid)
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "BENCH_EMULATOR": line,
            "SYNCGUARD_REDIS_PREFIX": f"benchdelta{uuid.uuid4().hex[:8]}:",
        }
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        command = [sys.executable, "-m", "bench.ingest_run", "sync", "outlook", str(count)]
        subprocess.run(command, env=env, check=True, capture_output=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        product = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return {"emulator_cpu_s": _cpu_s(emulator.pid) - seeded_cpu, "product_cpu_s": product}
    finally:
        emulator.kill()
        emulator.wait()
        drop()


def main() -> None:
    """Print the per-message cost at each size; ``--vs-product N``: CPU of both for one sync."""
    if "--vs-product" in sys.argv:
        count = int(sys.argv[sys.argv.index("--vs-product") + 1])
        figures = versus_product(count)
        ratio = figures["emulator_cpu_s"] / figures["product_cpu_s"]
        print(f"{count:,} messages: {figures} -> emulator / product = {ratio:.2f}", flush=True)
        return
    sizes = [int(a) for a in sys.argv[1:]] or [10_000, 100_000]
    for count in sizes:
        print(f"{count:>7,} messages: {round_us_per_message(count):.1f} µs/message", flush=True)


if __name__ == "__main__":
    main()
