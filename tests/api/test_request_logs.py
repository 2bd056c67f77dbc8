"""JSON log lines of the real API process: each request's lines carry its request id."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from api.api_keys import create_key
from providers.emulator.runner import free_port
from syncguard.settings import Settings
from tests.api.test_secrets_in_logs import Process, running, stack_child


@pytest.fixture
def json_api(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Process]:
    """The API as ``syncguard up`` starts it, with ``SYNCGUARD_LOG_FORMAT=json``."""
    monkeypatch.setenv("SYNCGUARD_LOG_FORMAT", "json")
    port = free_port()
    child = stack_child("api", Settings(api_port=port))
    with running(child, f"http://127.0.0.1:{port}", "/healthz") as process:
        yield process


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` that is a JSON object (the process's log records)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_every_line_of_a_request_carries_its_request_id_and_no_secret(json_api: Process) -> None:
    key = create_key(None, "json log scan")[1]
    given = "req-0123456789abcdef"
    with httpx.Client(base_url=json_api.url, timeout=10) as client:
        echoed = client.get("/healthz", headers={"X-Request-ID": given})
        minted = client.get(f"/api/v1/status?key={key}", headers={"X-Request-ID": "bad id!"})

    log = json_api.output()
    records = json_lines(log)

    assert echoed.headers["X-Request-ID"] == given
    # A header that is not a plain token is replaced, never echoed.
    new_id = minted.headers["X-Request-ID"]
    assert new_id != "bad id!" and len(new_id) == 32
    # Every log line the process printed is JSON: none fell back to the text format.
    assert [line for line in log.splitlines() if " INFO " in line and "{" not in line] == []
    ours = [r for r in records if r.get("request_id") == given]
    assert ours and all(r["level"] and r["logger"] and r["time"] for r in ours)
    assert any("/healthz" in r["message"] for r in ours)
    theirs = [r for r in records if r.get("request_id") == new_id]
    assert any("/api/v1/status" in r["message"] for r in theirs)
    assert key not in log and key.removeprefix("sgk_") not in log
