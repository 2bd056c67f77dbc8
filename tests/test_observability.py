"""JSON logs and one connected trace, from a real notification through the real API and worker.

The API and the worker are separate processes, so their spans cannot meet in one in-memory
exporter: each process appends its finished spans as JSON lines to its own file (the
``trace_file`` setting, syncguard.tracing.JsonLinesSpanExporter), and the test joins them by
trace and span ids exactly as a tracing backend would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from models import Provider, Store
from providers.emulator.runner import EmulatorHandle, free_port, running_emulator
from syncguard.db import service_session
from tasks.sync.requests import request_sync
from tasks.webhooks import create_subscription
from tests.sync_support import connect_store, emulator_env, eventually, local_copy, wait_for_job
from tests.worker import running_worker, stop

#: Celery's text log format, which no line may use once JSON is on.
TEXT_RECORD = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+: (DEBUG|INFO|WARNING|ERROR)/")


@pytest.fixture(scope="module")
def spool() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="observability-") as directory:
        yield Path(directory)


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


@pytest.fixture(scope="module")
def api_url(emulator: EmulatorHandle, spool: Path) -> Iterator[str]:
    """The real API in its own process, tracing to ``api-spans.jsonl``."""
    control = httpx.Client(base_url=f"{emulator.url}/_emulator", timeout=10)
    push = control.get("/push").json()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "SYNCGUARD_GMAIL_PUSH_JWKS_URL": f"{emulator.url}/_emulator/oauth2/v3/certs",
        "SYNCGUARD_GMAIL_PUSH_SERVICE_ACCOUNT": push["service_account_email"],
        "SYNCGUARD_TRACE_FILE": str(spool / "api-spans.jsonl"),
    }
    argv = [sys.executable, "-m", "uvicorn", "api:app", "--port", str(port)]
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True
    )
    try:
        eventually(lambda: _answers(f"{url}/healthz"), timeout_s=30)
        control.put("/push", json={"gmail_push_url": f"{url}/webhooks/gmail"}).raise_for_status()
        yield url
    finally:
        stop(proc)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def worker_log(emulator: EmulatorHandle, api_url: str, spool: Path) -> Iterator[Path]:
    """A real prefork worker with JSON logs on, tracing to ``worker-spans.jsonl``; its log."""
    env = {
        **emulator_env(emulator),
        "SYNCGUARD_PUBLIC_BASE_URL": api_url,
        "SYNCGUARD_LOG_FORMAT": "json",
        "SYNCGUARD_TRACE_FILE": str(spool / "worker-spans.jsonl"),
    }
    with running_worker(concurrency=2, env=env) as proc:
        yield _log_path_of(proc)


def _log_path_of(proc: subprocess.Popen[str]) -> Path:
    # running_worker sends the worker's output to a temporary file: find it by the pid's fds.
    return Path(os.readlink(f"/proc/{proc.pid}/fd/1"))


def _records(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")], lines


def _business_of(engine: Engine, store_id: uuid.UUID) -> str:
    with service_session(engine) as session:
        store = session.get(Store, store_id)
        assert store is not None
        return str(store.business_id)


def test_a_sync_task_logs_json_lines_bound_to_its_task_job_store_and_business(
    engine: Engine, emulator: EmulatorHandle, worker_log: Path
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
    mailbox.add("order #2001")

    job_id = request_sync(store_id)
    assert job_id is not None
    wait_for_job(engine, job_id)

    # Celery logs the task's success just after the job row says so.
    eventually(lambda: f"{job_id}', 'pages'" in worker_log.read_text())
    records, lines = _records(worker_log)
    task_lines = [r for r in records if r.get("job_id") == str(job_id)]
    for record in task_lines:
        assert record["store_id"] == str(store_id)
        assert record["business_id"] == _business_of(engine, store_id)
        assert record["task_name"] == "tasks.sync.sync_store"
        assert record["task_id"]
    assert any("succeeded" in r["message"] for r in task_lines)
    # Every log record is a JSON line (Celery's banner is printed, not logged).
    assert [line for line in lines if TEXT_RECORD.match(line)] == []
    text = worker_log.read_text()
    for secret in (mailbox.credentials.refresh_token, mailbox.credentials.client_secret):
        assert secret not in text


def _spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _trace_of(spans: list[dict[str, Any]], store_id: uuid.UUID) -> list[dict[str, Any]] | None:
    """The spans of a trace that holds a webhook request and a sync run of ``store_id``."""
    runs = [
        s
        for s in spans
        if s["name"] == "run/tasks.sync.sync_store"
        and s["attributes"].get("syncguard.store_id") == str(store_id)
    ]
    for run in runs:
        trace = [s for s in spans if s["context"]["trace_id"] == run["context"]["trace_id"]]
        if any(s["name"] == "POST /webhooks/gmail" for s in trace):
            return trace
    return None


def _is_http_client(span: dict[str, Any]) -> bool:
    attributes = span["attributes"]
    is_http = "http.request.method" in attributes or "http.method" in attributes
    return span["kind"] == "SpanKind.CLIENT" and is_http


def _ancestors(span: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> list[str]:
    names = []
    while span.get("parent_id"):
        span = by_id[span["parent_id"]]
        names.append(span["name"])
    return names


def test_a_notification_yields_one_trace_from_the_webhook_to_the_provider_calls(
    engine: Engine, emulator: EmulatorHandle, worker_log: Path, spool: Path
) -> None:
    store_id, mailbox = connect_store(engine, emulator, Provider.GMAIL)
    create_subscription.delay(str(store_id)).get(timeout=30)
    new_id = mailbox.add("order #3001")

    # No request_sync: the emulator's push notification is the only thing that starts it.
    eventually(lambda: new_id in local_copy(engine, store_id), timeout_s=60)
    files = (spool / "api-spans.jsonl", spool / "worker-spans.jsonl")
    trace = eventually(lambda: _trace_of([s for f in files for s in _spans(f)], store_id))

    by_id = {s["context"]["span_id"]: s for s in trace}
    [run] = [s for s in trace if s["name"] == "run/tasks.sync.sync_store"][:1]
    assert run["attributes"]["syncguard.business_id"] == _business_of(engine, store_id)
    assert run["resource"]["attributes"]["service.name"] == "syncguard-worker"
    # The run descends from the publish in the API, which descends from the webhook request.
    assert _ancestors(run, by_id)[:1] == ["apply_async/tasks.sync.sync_store"]
    assert "POST /webhooks/gmail" in _ancestors(run, by_id)
    # The webhook's own span names the store and business it enqueued work for.
    [webhook] = [s for s in trace if s["name"] == "POST /webhooks/gmail"]
    assert webhook["attributes"]["syncguard.store_id"] == str(store_id)
    assert webhook["attributes"]["syncguard.business_id"] == _business_of(engine, store_id)
    assert webhook["resource"]["attributes"]["service.name"] == "syncguard-api"
    # Every provider call of the run is an httpx span under it, and the guard let it through.
    under_run = [s for s in trace if run["name"] in _ancestors(s, by_id)]
    calls = [s for s in under_run if _is_http_client(s)]
    assert calls and all(emulator.url in json.dumps(s["attributes"]) for s in calls)
    # And its statements (the SQLAlchemy instrumentation) belong to the same trace.
    assert any(
        "db.system" in s["attributes"] or "db.system.name" in s["attributes"] for s in under_run
    )
    decisions = [e["name"] for e in run["events"]]
    assert "guard.allowed" in decisions
    allowed = next(e for e in run["events"] if e["name"] == "guard.allowed")
    assert allowed["attributes"]["syncguard.store_id"] == str(store_id)


def test_spans_leave_the_process_without_the_secrets_in_their_urls(
    api_url: str, spool: Path
) -> None:
    # Found by review: the FastAPI and httpx spans recorded full URLs, query keys included.
    secret = "sgk_" + uuid.uuid4().hex
    assert httpx.get(f"{api_url}/dashboard/login", params={"key": secret}).status_code == 400
    handshake = httpx.post(f"{api_url}/webhooks/outlook", params={"validationToken": secret})
    assert handshake.status_code == 200
    path = spool / "api-spans.jsonl"
    login = eventually(
        lambda: [s for s in _spans(path) if s["name"].startswith("GET /dashboard/login")]
    )
    assert "[REDACTED]" in json.dumps(login)
    assert secret not in path.read_text()
