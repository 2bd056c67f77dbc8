"""Tasks the task benchmarks run on our app's workers (``-I bench.task_defs``)."""

from __future__ import annotations

from tasks import app
from tasks.base import SafeguardedTask


@app.task(name="bench.plain")  # type: ignore[untyped-decorator]
def plain() -> None:
    """A no-op on our app's configuration (its base class, its settings)."""


@app.task(bind=True, base=SafeguardedTask, name="bench.guarded")  # type: ignore[untyped-decorator]
def guarded(self: SafeguardedTask, store_id: str) -> None:
    """A no-op that makes one guarded call, as a sync task does per provider call."""
    with self.guard("messages.get"):
        pass
