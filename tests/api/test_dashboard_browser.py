"""The dashboard in Debian's headless chromium, driven over the DevTools protocol (no download).

Set ``SYNCGUARD_SCREENSHOT=docs/dashboard.png`` to also write the page's screenshot there.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import websocket
from sqlalchemy import Engine

import models
from api.api_keys import create_key
from safeguards.dead_letter.archive import get_entry
from safeguards.health_metrics.recorder import Metric, write_metrics
from safeguards.rate_limit.limiter import get_rate_limiter
from syncguard.db import service_session
from tests.api.test_v1 import Tenant, seed_business

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--remote-debugging-port=0", "--window-size=1400,1000", "--hide-scrollbars",
)  # fmt: skip
#: Seconds to wait for chromium, a page load or the replay's result.
TIMEOUT_S = 20.0


class Page:
    """One page target over CDP: send commands, collect console errors and exceptions."""

    def __init__(self, ws_url: str) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=TIMEOUT_S, suppress_origin=True)
        self.ids = itertools.count(1)
        self.errors: list[str] = []
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Run a command and return its result, noting every event that arrives meanwhile."""
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = self._receive()
            if message.get("id") == call_id:
                assert "error" not in message, message["error"]
                result: dict[str, Any] = message["result"]
                return result

    def _receive(self) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(self.ws.recv())
        method = message.get("method")
        params = message.get("params", {})
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            self.errors.append(" ".join(str(a.get("value", a)) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            self.errors.append(json.dumps(params["exceptionDetails"])[:500])
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(f"{params['entry']['text']} {params['entry'].get('url', '')}")
        elif method:
            self.events.append(message)
        return message

    def navigate(self, url: str) -> None:
        """Load ``url`` and wait for its load event."""
        self.events.clear()
        self.send("Page.navigate", url=url)
        deadline = time.monotonic() + TIMEOUT_S
        while not any(e["method"] == "Page.loadEventFired" for e in self.events):
            assert time.monotonic() < deadline, f"{url} did not load"
            self._receive()

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait_for(self, expression: str) -> Any:
        """The first truthy value of ``expression``, polled."""
        deadline = time.monotonic() + TIMEOUT_S
        while not (value := self.evaluate(expression)):
            assert time.monotonic() < deadline, f"timed out waiting for {expression}"
            time.sleep(0.1)
        return value

    def screenshot(self, path: Path) -> None:
        """A PNG of the whole page."""
        height = self.evaluate("document.documentElement.scrollHeight")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=1400,
            height=int(height),
            deviceScaleFactor=1,
            mobile=False,
        )
        shot = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))


@pytest.fixture
def browser() -> Iterator[Page]:
    """Headless chromium on a fresh profile; a missing chromium fails here, loudly."""
    binary = shutil.which(CHROMIUM)
    if binary is None:
        pytest.fail(f"{CHROMIUM} not found: apt-get install -y chromium (see .ci/run)")
    profile = Path(tempfile.mkdtemp(prefix="syncguard-chromium-"))
    process = subprocess.Popen(
        [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + TIMEOUT_S
        while not port_file.exists() or not port_file.read_text().strip():
            assert process.poll() is None, f"chromium exited with {process.returncode}"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.05)
        port = port_file.read_text().split()[0]
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
        page = Page(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])
        for domain in ("Runtime", "Page", "Log"):
            page.send(f"{domain}.enable")
        yield page
        page.ws.close()
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)


def seed_demo() -> list[Tenant]:
    """Stores of three businesses with live usage, circuits in every state, metrics, alerts."""
    tenants = [
        seed_business("Northwind", circuit="open"),
        seed_business("Contoso", circuit="half_open", metric_base=60),
        seed_business("Fabrikam", circuit="closed", metric_base=30),
    ]
    limiter = get_rate_limiter()
    for tenant, calls in zip(tenants, (210, 90, 20), strict=True):
        for _ in range(calls):
            decision = limiter.hit(str(tenant.store_id), "messages.get", cost=1)
            limiter.release(str(tenant.store_id), decision.lease_id, success=True)
    now = datetime.now(UTC)
    write_metrics(
        [
            Metric(
                models.MetricType.QUEUE,
                name,
                value,
                measured_at=now - timedelta(minutes=minute, seconds=sample * 20),
            )
            for minute in range(0, 90)
            for sample in range(2)
            for name, value in (
                ("queue_depth", 40 + 30 * ((minute // 15) % 2) + minute % 7 + sample),
                ("sync_latency_ms", 180 + 3 * (minute % 20) + 40 * sample),
            )
        ]
    )
    with service_session() as s:
        s.add(
            models.Alert(
                rule="archive_backlog",
                severity="warning",
                dedup_key=f"archive_backlog:{uuid.uuid4()}",
                message="3 dead-letter entries unreviewed for more than an hour",
            )
        )
    return tenants


def log_in(browser: Page, api_url: str, key: str) -> None:
    """Type ``key`` into the login form and submit it (POST: a key never goes in a URL)."""
    browser.navigate(f"{api_url}/dashboard/login")
    browser.evaluate(f"document.getElementById('key').value = {json.dumps(key)}")
    browser.evaluate("document.querySelector('form').submit()")
    browser.wait_for("location.pathname === '/dashboard' && document.readyState === 'complete'")


def test_the_operator_sees_real_data_replays_from_the_page_without_console_errors(
    api_url: str, engine: Engine, browser: Page
) -> None:
    tenants = seed_demo()
    operator_key = create_key(None, "Olivia Operator")[1]
    northwind = tenants[0]

    log_in(browser, api_url, operator_key)
    text = browser.evaluate("document.body.innerText")
    assert northwind.address in text
    assert northwind.alert_message in text
    assert browser.evaluate(
        f"!!document.querySelector('tr.entry[data-entry-id=\"{northwind.archive_id}\"]')"
    )
    assert browser.evaluate("document.querySelectorAll('tr.circuit[data-state=open]').length") >= 1
    assert browser.evaluate("document.querySelectorAll('svg.trend polyline').length") >= 2
    # Some bar is drawn (other tests' businesses, with no usage, may come first on the page).
    assert browser.evaluate(
        "[...document.querySelectorAll('.fill[data-pct]')].some(f => parseFloat(f.style.width) > 0)"
    )

    if os.environ.get("SYNCGUARD_SCREENSHOT"):
        browser.screenshot(Path(os.environ["SYNCGUARD_SCREENSHOT"]))
        browser.send("Emulation.clearDeviceMetricsOverride")

    row = f'tr.entry[data-entry-id="{northwind.archive_id}"]'
    browser.evaluate(f"document.querySelector('{row} button[data-action=replay]').click()")
    result = browser.wait_for(
        "document.getElementById('action-result').textContent.includes('Replayed as task') && "
        "document.getElementById('action-result').textContent"
    )
    entry = get_entry(northwind.archive_id)
    assert entry is not None and entry.replay_task_id is not None
    assert entry.replay_task_id in result
    assert entry.reviewed_by == "Olivia Operator"

    assert browser.errors == []

    # A second replay is refused: the page says why; the browser logs the 409, nothing else.
    browser.evaluate(f"document.querySelector('{row} button[data-action=replay]').click()")
    refused = browser.wait_for(
        "document.getElementById('action-result').textContent.includes('refused') && "
        "document.getElementById('action-result').textContent"
    )
    assert "409" in refused and "already replayed" in refused
    assert len(browser.errors) == 1 and "status of 409" in browser.errors[0], browser.errors


def test_a_tenant_sees_only_its_business_and_no_action_buttons(
    api_url: str, engine: Engine, browser: Page
) -> None:
    mine, theirs = seed_business("Initech"), seed_business("Umbrella")
    log_in(browser, api_url, mine.key)
    text = browser.wait_for("document.getElementById('alerts') && document.body.innerText")
    assert mine.address in text and mine.alert_message in text
    assert theirs.address not in text and theirs.alert_message not in text
    assert browser.evaluate("document.querySelectorAll('button[data-action]').length") == 0
    assert browser.errors == []


def seed_archived_job(tenant: Tenant) -> tuple[uuid.UUID, str]:
    """An archived manual sync job of ``tenant``'s store, with its archive entry; id, reason."""
    task_id = f"task-{uuid.uuid4().hex}"
    reason = f"Gmail answered 503 six times ({task_id[-6:]})"
    with service_session() as s:
        job = models.SyncJob(
            store_id=tenant.store_id,
            kind="full",
            trigger="manual",
            status="archived",
            attempts=6,
            deferrals=1,
            celery_task_id=task_id,
        )
        entry = models.FailedJobArchive(
            store_id=tenant.store_id,
            job_id=task_id,
            job_type="tasks.sync.sync_store",
            failure_reason=reason,
            failure_category="transient_exhausted",
            retry_count=5,
            job_data={"task": "tasks.sync.sync_store", "args": [str(tenant.store_id)]},
        )
        s.add_all([job, entry])
        s.flush()
        return job.id, reason


def test_the_jobs_page_filters_by_state_and_opens_a_job_with_its_archive_entry(
    api_url: str, engine: Engine, browser: Page
) -> None:
    tenant, stranger = seed_business("Globex"), seed_business("Hooli")
    archived_id, reason = seed_archived_job(tenant)
    log_in(browser, api_url, tenant.key)

    browser.evaluate("document.getElementById('jobs-link').click()")
    browser.wait_for(
        "location.pathname === '/dashboard/jobs' && document.readyState === 'complete'"
    )
    every = browser.evaluate("[...document.querySelectorAll('tr.job')].map(r => r.dataset.status)")
    assert sorted(every) == ["archived", "failed"]  # its own two jobs, never Hooli's
    assert stranger.address not in browser.evaluate("document.body.innerText")

    browser.evaluate("document.getElementById('filter-status').value = 'archived'")
    browser.evaluate("document.getElementById('job-filter').submit()")
    browser.wait_for(
        "location.search.includes('status=archived') && document.readyState === 'complete'"
    )
    rows = browser.evaluate("[...document.querySelectorAll('tr.job')].map(r => r.dataset.jobId)")
    assert rows == [str(archived_id)]

    browser.evaluate("document.querySelector('tr.job a.job-link').click()")
    browser.wait_for(
        f"location.pathname === '/dashboard/jobs/{archived_id}' && "
        "document.readyState === 'complete'"
    )
    archive = browser.evaluate("document.getElementById('job-archive').innerText")
    facts = browser.evaluate("document.getElementById('job').innerText")
    assert reason in archive and "transient_exhausted" in archive
    assert "Attempts\t6" in facts or "Attempts\n6" in facts
    # The dashboard's stores table links each store's history and its last job.
    browser.navigate(f"{api_url}/dashboard")
    history = browser.evaluate(
        "[...document.querySelectorAll('#stores a.link')].map(a => a.getAttribute('href'))"
    )
    assert f"/dashboard/jobs?store_id={tenant.store_id}" in history
    assert browser.errors == []
