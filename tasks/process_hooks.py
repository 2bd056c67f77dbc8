"""Per-process set-up of worker children."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_process_init

from syncguard.db import dispose_engines


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _fresh_database_pool(**_: Any) -> None:
    # A forked child must not reuse the parent's pooled connections (SQLAlchemy's rule).
    dispose_engines()
