"""The dashboard answers our own database outage as /api/v1 does: 503, never 500.

A separate uvicorn process of the API runs with its database at a closed port; each dashboard
route that needs the database is asked as a browser would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from providers.emulator.runner import free_port
from syncguard.settings import get_settings
from tests.worker import stop

#: Port 1: nothing listens there, so every connection is refused at once.
CLOSED = "127.0.0.1:1"
UNAVAILABLE = (503, {"error": "a backing service is unavailable; retry"})


@pytest.fixture(scope="module")
def api_without_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {**os.environ, "DATABASE_URL": f"postgresql+psycopg://postgres@{CLOSED}/nowhere"}
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "api:create_app", "--factory"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    log_path: Path = tmp_path_factory.mktemp("api") / "api.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=5)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    message = f"API did not start:\n{log_path.read_text()[-3000:]}"
                    raise RuntimeError(message) from None
                time.sleep(0.1)
        yield url
    finally:
        stop(proc)


def _client(url: str, *, session: str | None = None) -> httpx.Client:
    cookies = {get_settings().dashboard_cookie_name: session} if session else None
    return httpx.Client(base_url=url, timeout=30, cookies=cookies, follow_redirects=False)


def test_the_dashboard_page_answers_503_while_the_database_is_down(
    api_without_database: str,
) -> None:
    with _client(api_without_database, session="a-session-token") as browser:
        response = browser.get("/dashboard")

    assert (response.status_code, response.json()) == UNAVAILABLE


def test_logging_in_answers_503_while_the_database_is_down(api_without_database: str) -> None:
    with _client(api_without_database) as browser:
        response = browser.post("/dashboard/login", data={"key": "sgk_" + "a" * 40})

    assert (response.status_code, response.json()) == UNAVAILABLE


def test_logging_out_answers_503_while_the_database_is_down(api_without_database: str) -> None:
    with _client(api_without_database, session="a-session-token") as browser:
        response = browser.post("/dashboard/logout")

    assert (response.status_code, response.json()) == UNAVAILABLE


def test_api_v1_answers_the_same_503(api_without_database: str) -> None:
    # The mechanism the dashboard now shares, for comparison
    with _client(api_without_database) as client:
        response = client.get("/api/v1/circuits", headers={"Authorization": "Bearer sgk_x"})

    assert (response.status_code, response.json()) == UNAVAILABLE
