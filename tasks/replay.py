"""Replay of dead-letter entries: the task side's half of ``safeguards.dead_letter.replay``."""

from __future__ import annotations

from typing import Any

from safeguards.dead_letter.archive import ArchivedJob
from tasks import app

#: Options of the original publication that a replay repeats.
_REPLAYED_OPTIONS = ("queue", "priority")
#: Message header naming the archive entry a message replays: a task whose job has ended treats
#: a plain redelivery as stale, but runs a replay.
REPLAY_OF = "syncguard_replay_of"


def enqueue_archived(job: ArchivedJob) -> str:
    """Publish an archived job again (same task, args, kwargs, headers), fresh id and retries."""
    options: dict[str, Any] = {
        k: v for k, v in job.options.items() if k in _REPLAYED_OPTIONS and v is not None
    }
    headers = {**job.headers, REPLAY_OF: str(job.id)}
    result = app.send_task(job.task, args=job.args, kwargs=job.kwargs, headers=headers, **options)
    return str(result.id)
