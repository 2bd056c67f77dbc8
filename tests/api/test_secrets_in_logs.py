"""No secret in any log line: the real API process as ``syncguard up`` starts it, and the scrubber.

The regression: ``GET /dashboard/login?key=sgk_...`` used to log in, and uvicorn's access log
printed the whole key. Here the API runs as its own process with the very command line of
``syncguard up`` (and docker-compose), its output captured, and scanned for every secret sent.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from api.api_keys import create_key
from providers.emulator.runner import free_port
from syncguard.cli.main import stack_children
from syncguard.cli.stack import Child
from syncguard.logging_config import REDACTED, log_config, scrub, scrub_record
from syncguard.settings import Settings, get_settings
from tests.sync_support import eventually
from tests.worker import stop

#: How long the API process may take to answer /healthz, seconds.
START_TIMEOUT_S = 60.0
COOKIE = get_settings().dashboard_cookie_name


class Process:
    """A child process of the stack: its URL and everything it printed."""

    def __init__(self, url: str, proc: subprocess.Popen[str], log_path: Path) -> None:
        self.url, self.proc, self.log_path = url, proc, log_path

    def output(self) -> str:
        """Stop the process (so every line is flushed) and return its stdout and stderr."""
        stop(self.proc)
        return self.log_path.read_text()


@contextmanager
def running(child: Child, url: str, ready_path: str) -> Iterator[Process]:
    """``child`` started as ``syncguard up`` starts it, once ``url + ready_path`` answers 200."""
    log_path = Path(tempfile.mkstemp(prefix=f"{child.name}-", suffix=".log")[1])
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            list(child.argv), env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT, text=True
        )
    try:
        eventually(lambda: _answers(f"{url}{ready_path}", proc), timeout_s=START_TIMEOUT_S)
        yield Process(url, proc, log_path)
    finally:
        stop(proc)
        sys.stderr.write(f"[{child.name} log: {log_path}]\n")


def _answers(url: str, proc: subprocess.Popen[str]) -> bool:
    assert proc.poll() is None, f"the process exited with {proc.returncode}"
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def stack_child(name: str, settings: Settings, verbose: bool = False) -> Child:
    """The command line ``syncguard up`` (``-v``: verbose) runs as ``name`` (demo included)."""
    [child] = [c for c in stack_children(settings, demo=True, verbose=verbose) if c.name == name]
    return child


@pytest.fixture
def api_process(engine: Engine) -> Iterator[Process]:
    """The API started exactly as ``syncguard up`` starts it, on a free loopback port."""
    port = free_port()
    child = stack_child("api", Settings(api_port=port))
    with running(child, f"http://127.0.0.1:{port}", "/healthz") as process:
        yield process


def test_the_api_process_logs_no_key_from_the_login_link_the_form_or_any_query(
    api_process: Process,
) -> None:
    key = create_key(None, "log scan")[1]
    with httpx.Client(base_url=api_process.url, timeout=10) as client:
        # The link that used to log in: refused, and its key must not reach the log.
        link = client.get(f"/dashboard/login?key={key}")
        assert link.status_code == 400
        login = client.post("/dashboard/login", data={"key": key})
        assert login.status_code == 303
        token = login.cookies[COOKIE]
        page = client.get("/dashboard", headers={"Cookie": f"{COOKIE}={token}"})
        assert page.status_code == 200
        # Secrets in the query of other routes, known and unknown, under the usual names.
        bearer = {"Authorization": f"Bearer {key}"}
        for path in ("/api/v1/status", "/healthz", "/no/such/route", "/webhooks/outlook"):
            for name in ("key", "token", "access_token", "code"):
                client.get(f"{path}?{name}={key}&session={token}", headers=bearer)
        assert client.post("/dashboard/login", data={"key": "a\x00b"}).status_code == 400

    log = api_process.output()

    assert key not in log and key.removeprefix("sgk_") not in log
    assert token not in log and token.removeprefix("sgs_") not in log
    # The access log is on and shows the requests, with query values masked.
    assert f"GET /dashboard/login?key={REDACTED} HTTP/1.1" in log
    assert f"GET /api/v1/status?access_token={REDACTED}&session={REDACTED}" in log
    assert "POST /dashboard/login HTTP/1.1" in log


def test_the_emulator_process_logs_no_query_secret() -> None:
    # The demo's provider double is started by `syncguard up` too; its uvicorn keeps its own
    # access format, and the CLI's record factory scrubs it.
    port = free_port()
    secret = "ya29.emulator-" + "t" * 30
    # Its access log is on with `syncguard -v up` (off by default, to keep the demo readable).
    child = stack_child("emulator", Settings(emulator_port=port), verbose=True)
    with running(child, f"http://127.0.0.1:{port}", "/_emulator/oauth2/v3/certs") as emulator:
        certs = f"{emulator.url}/_emulator/oauth2/v3/certs"
        assert httpx.get(certs, params={"access_token": secret}).status_code == 200
        log = emulator.output()
    assert secret not in log
    assert f"/_emulator/oauth2/v3/certs?access_token={REDACTED}" in log


def test_every_process_that_loads_the_celery_app_scrubs_its_log_records() -> None:
    # Worker, beat and Flower all start with `-A tasks`; whatever handlers they set up later,
    # the record factory installed on import scrubs every record.
    secret = "sgk_" + "Q" * 43
    program = (
        "import logging, sys, tasks\n"
        "logging.basicConfig(stream=sys.stdout, format='%(message)s')\n"
        "log = logging.getLogger('celery.worker')\n"
        f"log.warning('GET /flower/api?token=%s', {secret!r})\n"
        f"log.error('failed: %(exc)r', {{'exc': RuntimeError('Bearer {secret}')}})\n"
        "try:\n"
        f"    raise ValueError('key was {secret}')\n"
        "except ValueError:\n"
        "    log.exception('task failed')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    assert secret not in result.stdout + result.stderr
    assert f"?token={REDACTED}" in result.stdout
    assert f"Bearer {REDACTED}" in result.stdout
    assert f"key was sgk_{REDACTED}" in result.stdout


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("GET /x?key=sgk_abc&limit=5 HTTP/1.1", f"GET /x?key={REDACTED}&limit={REDACTED} HTTP/1.1"),
        ("https://h/cb?code=4/0Ab#frag", f"https://h/cb?code={REDACTED}#frag"),
        ("/p?a=1&&b=", f"/p?a={REDACTED}&&b={REDACTED}"),
        ("token sgs_abcdefgh in text", f"token sgs_{REDACTED} in text"),
        ("authorization: bearer abc.def-ghi", f"authorization: bearer {REDACTED}"),
        ("GET /dashboard HTTP/1.1", "GET /dashboard HTTP/1.1"),
        # Encoded separators and keys glued to a word (found by review: all three leaked)
        ("GET /x?key%3Dsgk_AAAAAAAAAA HTTP/1.1", f"GET /x?key%3D{REDACTED} HTTP/1.1"),
        ("GET /task/x%3Dsgk_AAAAAAAAAA HTTP/1.1", f"GET /task/x%3Dsgk_{REDACTED} HTTP/1.1"),
        ("GET /a%3Fkey%3Dsecretvalue HTTP/1.1", f"GET /a%3Fkey%3D{REDACTED} HTTP/1.1"),
        ("k_sgk_AAAAAAAAAA", f"k_sgk_{REDACTED}"),
        ("who? me = yes", "who? me = yes"),
    ],
)
def test_scrub_masks_query_values_keys_and_bearer_credentials(line: str, expected: str) -> None:
    assert scrub(line) == expected


def test_a_uvicorn_access_record_keeps_its_shape_and_loses_its_query_values() -> None:
    # uvicorn's AccessFormatter unpacks exactly five arguments: they must stay five.
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/dashboard/login?key=sgk_secretvalue", "1.1", 400),
        None,
    )
    scrub_record(record)
    assert record.args == ("127.0.0.1:5000", "GET", f"/dashboard/login?key={REDACTED}", "1.1", 400)
    assert (
        record.getMessage()
        == f'127.0.0.1:5000 - "GET /dashboard/login?key={REDACTED} HTTP/1.1" 400'
    )


def test_uvicorn_loggers_go_through_the_one_handler() -> None:
    config = log_config("INFO")
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        assert config["loggers"][name] == {"handlers": [], "propagate": True}
    assert config["root"]["handlers"] == ["stderr"]


def _record(msg: str, args: tuple[object, ...]) -> logging.LogRecord:
    return logging.LogRecord("x", logging.WARNING, __file__, 1, msg, args, None)


def test_a_template_that_puts_the_secret_in_a_query_is_rendered_then_scrubbed() -> None:
    record = _record("GET /cb?token=%s", ("opaque-secret-value",))
    scrub_record(record)
    assert record.getMessage() == f"GET /cb?token={REDACTED}"


def test_a_broken_logging_call_is_reported_scrubbed_not_with_its_raw_arguments() -> None:
    # logging's own error report prints the raw arguments of a call that cannot render.
    record = _record("%d items", ("sgk_abcdefghijkl",))
    scrub_record(record)
    assert record.args == () and "abcdefghijkl" not in record.getMessage()
