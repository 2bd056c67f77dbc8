"""Run the stack's processes in the foreground: start them, watch them, stop them in order."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType

log = logging.getLogger(__name__)

#: How long a child may take to shut down after SIGTERM before it is killed, seconds.
STOP_TIMEOUT_S = 20.0
#: How often the supervisor looks for a child that died, seconds.
POLL_INTERVAL_S = 0.5


@dataclass(frozen=True)
class Child:
    """One long-running process of the stack: a name for the logs, its command line and the
    variables it alone gets on top of the stack's (a secret only it needs, say)."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)


class Stack:
    """Children started together; if one dies the rest are stopped, and so on a signal."""

    def __init__(self, children: Sequence[Child], env: Mapping[str, str]) -> None:
        self._children = list(children)
        self._env = dict(env)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._stop = threading.Event()

    def run(self) -> int:
        """Run until SIGINT/SIGTERM (exit 0) or until a child exits on its own (exit 1)."""
        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in signals}
        try:
            for child in self._children:
                self._start(child)
            return self._watch()
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def stop(self) -> None:
        """Ask every child to stop (SIGTERM), then kill whatever is left after the timeout."""
        running = [(name, p) for name, p in self._procs.items() if p.poll() is None]
        for name, proc in running:
            log.info("stopping %s (pid %s)", name, proc.pid)
            proc.terminate()  # the main process only: Celery's warm shutdown manages its pool
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for name, proc in running:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %ss: killing it", name, STOP_TIMEOUT_S)
        for proc in self._procs.values():
            _kill_group(proc)
        for proc in self._procs.values():
            proc.wait()

    def _start(self, child: Child) -> None:
        # Own process group: a terminal's Ctrl-C reaches only us, so shutdown happens in order,
        # and a child's leftover grandchildren (pool processes) can be killed with the group.
        env = {**self._env, **child.env}
        proc = subprocess.Popen(list(child.argv), env=env, process_group=0)
        self._procs[child.name] = proc
        log.info("started %s (pid %s)", child.name, proc.pid)
        log.debug("%s runs %s", child.name, " ".join(child.argv))

    def _watch(self) -> int:
        while not self._stop.wait(POLL_INTERVAL_S):
            for name, proc in self._procs.items():
                code = proc.poll()
                if code is not None:
                    log.error("%s exited unexpectedly with code %s: stopping the stack", name, code)
                    return 1
        return 0

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping the stack", signal.Signals(signum).name)
        self._stop.set()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # Whatever is left of the child's group (say, an orphaned pool process) goes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
