"""Spans from a worker whose pool runs tasks in the worker itself (``-P solo``).

Such a worker forks no child, so no ``worker_process_init`` is sent: the task observability is
set up from ``worker_init`` instead (tasks/process_hooks.py). The prefork path is covered by
tests/test_observability.py.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from tasks.maintenance import heartbeat
from tests.sync_support import eventually
from tests.worker import running_worker


def test_a_solo_worker_traces_its_tasks() -> None:
    with tempfile.TemporaryDirectory(prefix="observability-solo-") as directory:
        spans_path = Path(directory) / "spans.jsonl"
        env = {"SYNCGUARD_LOG_FORMAT": "json", "SYNCGUARD_TRACE_FILE": str(spans_path)}
        with running_worker(pool="solo", concurrency=1, env=env) as proc:
            log_path = Path(os.readlink(f"/proc/{proc.pid}/fd/1"))
            task_id = heartbeat.delay().id
            heartbeat.AsyncResult(task_id).get(timeout=30)
            spans = eventually(lambda: _spans_of(spans_path, "run/tasks.maintenance.heartbeat"))
            log = log_path.read_text()

    # Celery logs no per-task line with a solo pool; the worker's own lines are JSON.
    assert '"message": "' in log and "ready." in log
    [run] = spans
    assert run["attributes"]["messaging.message.id"] == task_id
    assert run["attributes"]["celery.task_name"] == "tasks.maintenance.heartbeat"
    assert run["resource"]["attributes"]["service.name"] == "syncguard-worker"


def _spans_of(path: Path, name: str) -> list[dict[str, object]]:
    if not path.exists():
        return []
    spans = [json.loads(text) for text in path.read_text().splitlines() if text]
    return [span for span in spans if span["name"] == name]
