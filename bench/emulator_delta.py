"""The emulator's Graph delta round at 10,000 and 100,000 messages (``-m bench.emulator_delta``).

Issue 13 point 5: the test double must cost less than the product. Seeds a mailbox straight into
the emulator's state (as ``bench.ingest_emulator``), then serves one full delta round the way the
route does it: ``_changes`` for each page and the page's JSON body rendered by Starlette's
``JSONResponse``. Prints microseconds per message at each size: flat means linear (a round was
quadratic when every page re-read the whole mailbox), and the figure is to be compared with the
product's Outlook ingest, about 200 µs per message (5,068 msgs/s, README's benchmark table).
"""

from __future__ import annotations

import sys
import time

from starlette.responses import JSONResponse

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


def main() -> None:
    """Print the per-message cost at each size."""
    sizes = [int(a) for a in sys.argv[1:]] or [10_000, 100_000]
    for count in sizes:
        print(f"{count:>7,} messages: {round_us_per_message(count):.1f} µs/message", flush=True)


if __name__ == "__main__":
    main()
