"""Real Celery worker processes for tests: started as `celery -A tasks worker`, stopped by pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tasks.queues import QUEUE_NAMES

#: How long a worker may take to report ready, seconds.
READY_TIMEOUT_S = 60.0


@contextmanager
def running_worker(
    *,
    include: tuple[str, ...] = (),
    concurrency: int = 2,
    pool: str = "prefork",
    env: dict[str, str] | None = None,
    purge_first: bool = True,
    purge_last: bool = True,
) -> Iterator[subprocess.Popen[str]]:
    """A worker on this run's servers (the environment conftest set), ready when yielded.

    Test modules share one broker: messages another module left behind would otherwise run
    here, against that module's (stopped) emulator. Queues are emptied when the worker stops,
    and before it starts unless the test enqueued its own work first (``purge_first=False``);
    ``purge_last=False`` leaves them for a worker the test starts next.
    """
    if purge_first:
        purge_queues()
    name = f"test-{uuid.uuid4().hex[:6]}@%h"
    argv = [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-l", "info"]
    argv += ["-P", pool, "-c", str(concurrency), "-n", name, "-Q", ",".join(QUEUE_NAMES)]
    argv += ["--without-mingle", "--without-gossip", "--without-heartbeat"]
    if include:
        argv += ["-I", ",".join(include)]
    log_path = Path(tempfile.mkstemp(prefix="worker-", suffix=".log")[1])
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            argv, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT, text=True
        )
    try:
        _wait_ready(proc, log_path)
        yield proc
    finally:
        stop(proc)
        if purge_last:
            purge_queues()
        sys.stderr.write(f"[worker log: {log_path}]\n")


def purge_queues() -> int:
    """Drop every message waiting in this run's queues; the number dropped."""
    from tasks import app

    return int(app.control.purge())


def stop(proc: subprocess.Popen[str], timeout_s: float = 30.0) -> None:
    """Warm shutdown, then SIGKILL of the whole group if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(proc: subprocess.Popen[str], log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log_path.read_text()
        if " ready." in text:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}:\n{text[-3000:]}")
        time.sleep(0.1)
    stop(proc)
    tail = log_path.read_text()[-3000:]
    raise RuntimeError(f"worker not ready after {READY_TIMEOUT_S}s:\n{tail}")
