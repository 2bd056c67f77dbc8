"""A provider emulator seeded with N messages, in a process of its own, for ``bench.ingest``.

``python -m bench.ingest_emulator gmail 10000`` prints one JSON line (url, address, grant) once
it listens, then serves until killed. Messages are put straight into the emulator's state:
seeding 100,000 of them through the control API would take longer than the benchmark.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from providers.emulator.app import create_app
from providers.emulator.context import EmulatorContext
from providers.emulator.runner import start_background
from providers.emulator.state import Message, Provider

ADDRESS = "bench@ingest.test"
#: A realistic subject/sender/body size, bytes.
BODY = "Order confirmation. " * 10


def seed(ctx: EmulatorContext, provider: Provider, count: int) -> None:
    """Create the mailbox and add ``count`` messages, newest last."""
    ctx.state.create_mailbox(ADDRESS, provider)
    start_ms = int(time.time() * 1000) - count * 1000
    for i in range(count):
        message = Message(
            id="",
            thread_id="",
            labels=["INBOX", "UNREAD", "Label_orders"],
            subject=f"Your order #{i} has shipped",
            sender=f"shop{i % 97}@example.com",
            body=BODY,
            folder="inbox",
            received_ms=start_ms + i * 1000,
            history_id=0,
            changed_seq=0,
        )
        ctx.state.add_message(ADDRESS, message)


def main() -> None:
    """Seed, serve, print the grant, wait forever."""
    provider, count = Provider(sys.argv[1]), int(sys.argv[2])
    app = create_app()
    ctx: EmulatorContext = app.state.emulator
    seed(ctx, provider, count)
    url, _, _ = start_background(app)
    box = ctx.state.mailbox(ADDRESS)
    grant = {
        "client_id": box.client_id,
        "client_secret": box.client_secret,
        "refresh_token": box.refresh_token,
    }
    print(json.dumps({"url": url, "address": ADDRESS, "grant": grant}), flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
