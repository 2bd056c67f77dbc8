"""The queue names, one per kind of work so a slow kind cannot starve another."""

from __future__ import annotations

SYNC = "sync"
WEBHOOKS = "webhooks"
MAINTENANCE = "maintenance"
#: Every queue; a worker started without ``-Q`` consumes all of them.
QUEUE_NAMES = (SYNC, WEBHOOKS, MAINTENANCE)
