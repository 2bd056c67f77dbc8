"""Run the emulator: in the foreground (`serve`) or on a background thread for tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from providers.emulator.app import create_app
from providers.emulator.config import EmulatorConfig

#: Seconds to wait for a background server to start listening.
STARTUP_TIMEOUT_S = 10.0


def serve(
    host: str = "127.0.0.1", port: int = 8765, settings: EmulatorConfig | None = None
) -> None:
    """Serve the emulator in the foreground until interrupted."""
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class EmulatorHandle:
    """A running background emulator: its base URL, its app, and how to stop it."""

    url: str
    app: FastAPI
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        """Shut the server down and wait for its thread."""
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_background(
    app: FastAPI, host: str = "127.0.0.1", port: int | None = None
) -> tuple[str, uvicorn.Server, threading.Thread]:
    """Serve any ASGI app on a daemon thread; returns once it listens."""
    port = port or free_port(host)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=1, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"server on {host}:{port} did not start")
        time.sleep(0.01)
    return f"http://{host}:{port}", server, thread


@contextmanager
def running_emulator(
    settings: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int | None = None
) -> Iterator[EmulatorHandle]:
    """Start an emulator on a free port in a background thread; stop it on exit."""
    app = create_app(settings)
    url, server, thread = start_background(app, host, port)
    handle = EmulatorHandle(url, app, server, thread)
    try:
        yield handle
    finally:
        handle.stop()
