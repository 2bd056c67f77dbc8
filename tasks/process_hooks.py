"""Per-process set-up: secret-free logging in every Celery process, fresh pools in children."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_process_init

from syncguard.db import dispose_engines
from syncguard.logging_config import install_scrubber

# Worker, beat and Flower all load the app (``-A tasks``): their log records, whichever
# handlers Celery or tornado set up, are scrubbed of query values, keys and tokens.
install_scrubber()


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _fresh_database_pool(**_: Any) -> None:
    # A forked child must not reuse the parent's pooled connections (SQLAlchemy's rule).
    dispose_engines()
