"""Zero configuration: with no URLs, real embedded PostgreSQL and Redis serve a real worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from syncguard.services import ServicesError, ensure_services
from syncguard.settings import Settings

pytestmark = pytest.mark.slow

URL_VARIABLES = ("DATABASE_URL", "REDIS_URL", "BROKER_URL")
SYNCGUARD = str(Path(sys.executable).with_name("syncguard"))
ENSURE = """
import json
from syncguard.services import ensure_services
from syncguard.settings import get_settings
urls = ensure_services(get_settings(), start=True)
print(json.dumps({**urls.as_env(), "started": sorted(urls.started)}))
"""
HEARTBEAT = """
import json
from tasks.maintenance import heartbeat
print(json.dumps(heartbeat.delay().get(timeout=60)))
"""


@dataclass(frozen=True)
class Embedded:
    home: Path
    #: The environment with no service URLs: every process must find the embedded servers.
    env: dict[str, str]
    #: What each of the concurrent first ``ensure_services`` calls returned.
    first_calls: list[dict[str, Any]]

    @property
    def urls(self) -> dict[str, str]:
        return {name: self.first_calls[0][name] for name in URL_VARIABLES}


def _run(argv: list[str], env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _ensure(env: dict[str, str]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(_run([sys.executable, "-c", ENSURE], env))
    return result


def _pids(home: Path) -> tuple[str, str]:
    postmaster = (home / "postgres" / "postmaster.pid").read_text().splitlines()[0]
    return postmaster, (home / "redis" / "redis.pid").read_text().strip()


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    """Three processes start the embedded servers at once, as worker, beat and flower do."""
    home = tmp_path_factory.mktemp("syncguard-home")
    env = {k: v for k, v in os.environ.items() if k not in URL_VARIABLES}
    env.update(SYNCGUARD_HOME=str(home), SYNCGUARD_ENVIRONMENT="test")
    try:
        with ThreadPoolExecutor(3) as pool:
            first_calls = list(pool.map(_ensure, [env] * 3))
        _run([SYNCGUARD, "migrate"], env)
        yield Embedded(home, env, first_calls)
    finally:
        subprocess.run([SYNCGUARD, "down"], env=env, capture_output=True, timeout=60)


@pytest.fixture
def worker(embedded: Embedded) -> Iterator[subprocess.Popen[str]]:
    """A real worker started with no URLs and no -Q: zero-config, every queue."""
    argv = [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-l", "info", "-P", "solo"]
    argv += ["--without-mingle", "--without-gossip", "-n", "embedded-test@%h"]
    log = (embedded.home / "worker.log").open("w")
    proc = subprocess.Popen(argv, env=embedded.env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_concurrent_first_calls_share_one_pair_of_servers(embedded: Embedded) -> None:
    assert all({k: c[k] for k in URL_VARIABLES} == embedded.urls for c in embedded.first_calls)
    starters = sorted(s for call in embedded.first_calls for s in call["started"])
    assert starters == ["postgres", "redis"]  # each started exactly once
    assert embedded.urls["DATABASE_URL"].startswith("postgresql+psycopg://")
    assert embedded.urls["BROKER_URL"] == embedded.urls["REDIS_URL"]


def test_a_later_call_reuses_the_running_servers(embedded: Embedded) -> None:
    pids = _pids(embedded.home)
    again = _ensure(embedded.env)
    assert {k: again[k] for k in URL_VARIABLES} == embedded.urls
    assert again["started"] == []
    assert _pids(embedded.home) == pids


def test_heartbeat_runs_on_a_real_worker(embedded: Embedded, worker: subprocess.Popen[str]) -> None:
    client_env = {**embedded.env, **embedded.urls}
    result = json.loads(_run([sys.executable, "-c", HEARTBEAT], client_env, timeout=90))
    assert result["redis_ping"] is True
    assert result["database_time"]
    assert result["worker"].startswith("embedded-test@")
    assert worker.poll() is None


def test_production_refuses_the_embedded_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in URL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SYNCGUARD_ENVIRONMENT", "production")
    with pytest.raises(ServicesError, match=r"production refuses .*unset: DATABASE_URL, REDIS_URL"):
        ensure_services(Settings())
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://db.example/syncguard")
    with pytest.raises(ServicesError, match=r"unset: REDIS_URL\)"):
        ensure_services(Settings())


def test_up_in_production_without_urls_fails_clearly(embedded: Embedded) -> None:
    keys = Fernet.generate_key().decode()  # production's other requirement, met
    env = {**embedded.env, "SYNCGUARD_ENVIRONMENT": "production", "SYNCGUARD_ENCRYPTION_KEYS": keys}
    argv = [SYNCGUARD, "up", "--no-flower"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "production refuses the embedded servers" in done.stderr


def test_commands_other_than_up_use_the_running_servers(embedded: Embedded) -> None:
    pids = _pids(embedded.home)
    assert "Businesses:" in _run([SYNCGUARD, "status"], embedded.env)
    exports = _run([SYNCGUARD, "env"], embedded.env)
    assert f"export REDIS_URL={embedded.urls['REDIS_URL']}" in exports
    assert _pids(embedded.home) == pids  # reused, not restarted


def test_down_stops_both_servers(embedded: Embedded) -> None:
    """Last in this module: it stops the servers the tests above share."""
    pids = _pids(embedded.home)
    assert "stopped embedded redis, postgres" in _run([SYNCGUARD, "down"], embedded.env)
    assert not any(_alive(pid) for pid in pids)
    assert "nothing in" in _run([SYNCGUARD, "down"], embedded.env)


def test_after_down_other_commands_say_how_to_start_the_stack(embedded: Embedded) -> None:
    """After `down` (above): a command fails in one line and starts nothing."""
    done = subprocess.run(
        [SYNCGUARD, "dlq", "list"], env=embedded.env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "Error: the embedded PostgreSQL is not running: start the stack with "
        "`.venv/bin/syncguard up` (or `make run`), or set DATABASE_URL"
    ]
    assert not (embedded.home / "postgres" / "postmaster.pid").exists()
    assert not (embedded.home / "redis" / "port").exists()


def test_a_test_session_stops_the_servers_it_started(tmp_path: Path) -> None:
    # A test run with no URLs starts the embedded servers (tests/conftest.py) and stops them
    # at the end; servers already running when it began would be left alone.
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in URL_VARIABLES}
    env.update(SYNCGUARD_HOME=str(home), SYNCGUARD_ENVIRONMENT="test")
    # -n 0: one process. Under xdist the controller's unconfigure (which stops the servers)
    # can run before its workers' (which drop their databases), failing their teardown.
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0"]
    argv += [str(Path(__file__).with_name("test_settings.py"))]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    assert (home / "postgres").is_dir()  # it did start PostgreSQL there...
    assert not (home / "postgres" / "postmaster.pid").exists()  # ...and stopped it
    assert not (home / "redis" / "port").exists()
