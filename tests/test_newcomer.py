"""A newcomer's first hour: every command answers in one line, only `up` starts servers, the
API keys live in the CLI, the shell reaches the stack, `up` says where everything is."""

from __future__ import annotations

import functools
import os
import re
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import click
import pytest
import redis
from click.testing import CliRunner, Result
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api.api_keys import verify
from api.app import create_app
from models import ApiKeyRole
from syncguard.cli.credentials import OPERATOR_KEY_FILE, development_operator_key
from syncguard.cli.main import main
from syncguard.cli.up import _banner, stack_children
from syncguard.db import service_session
from syncguard.settings import Settings
from tasks.maintenance import heartbeat, mirror_safeguard_state, run_all_cleanup_tasks
from tasks.queues import MAINTENANCE, QUEUE_NAMES
from tests.factories import make_business, make_store
from tests.sync_support import eventually
from tests.worker import purge_queues, stop

SYNCGUARD = str(Path(sys.executable).with_name("syncguard"))
URL_VARIABLES = ("DATABASE_URL", "REDIS_URL", "BROKER_URL")
#: A PostgreSQL and a Redis nobody listens on.
UNREACHABLE = {
    "DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
    "REDIS_URL": "redis://127.0.0.1:1/0",
}
#: An id no row has, fixed: pytest-xdist requires every worker to collect the same test ids.
ABSENT_ID = uuid.UUID("c27e5f09-1b84-4d3a-9e6c-57a0d2b8f413")
#: Commands that need the database (and some Redis or the broker), with valid arguments.
NEEDS_THE_STACK = [
    ["status"],
    ["dlq", "list"],
    ["store", "list"],
    ["api-key", "list"],
    ["api-key", "create", "ops"],
    ["cleanup", "--dry-run"],
    ["sync", str(ABSENT_ID)],
    ["migrate"],
]

#: Commands run at once by ``_concurrently``: each is a process of its own that mostly imports
#: and waits on a refused connection, so a few overlap well even on two cores.
CONCURRENT_COMMANDS = 3
#: How long one of them may take, seconds (a bound for a loaded machine, not a measurement).
COMMAND_TIMEOUT_S = 180.0
K = TypeVar("K")
V = TypeVar("V")


def _run(
    args: list[str], env: dict[str, str], timeout: float = COMMAND_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SYNCGUARD, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single ``Error:`` line a failed command printed (no traceback, no log lines)."""
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    assert "Traceback" not in done.stdout
    return lines[0]


def _without_urls(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in URL_VARIABLES}
    return {**env, "SYNCGUARD_HOME": str(home), "SYNCGUARD_ENVIRONMENT": "development"}


def _concurrently(calls: Mapping[K, Callable[[], V]]) -> dict[K, V]:
    """Each call's result; the calls run a few at a time (each mostly waits on its own process)."""
    with ThreadPoolExecutor(max_workers=CONCURRENT_COMMANDS) as pool:
        futures = {key: pool.submit(call) for key, call in calls.items()}
        return {key: future.result() for key, future in futures.items()}


# --- point 6: only `up` starts servers ------------------------------------------------------

NOT_UP = [*NEEDS_THE_STACK, ["env"], ["psql"], ["api", "--port", "1"], ["demo", "--wait", "0"]]


@dataclass(frozen=True)
class WithoutServers:
    """A command run without URLs in a fresh home, then again in a home a stopped stack left."""

    fresh: subprocess.CompletedProcess[str]
    created_home: bool
    stopped: subprocess.CompletedProcess[str]
    created_postgres: bool


def _without_servers(args: list[str], home: Path) -> WithoutServers:
    fresh = _run(args, _without_urls(home))
    created_home = home.exists()
    (home / "redis").mkdir(parents=True)  # a stack that ran here once and was stopped
    stopped = _run(args, _without_urls(home))
    return WithoutServers(fresh, created_home, stopped, (home / "postgres").exists())


@pytest.fixture(scope="module")
def without_servers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, WithoutServers]:
    """Every NOT_UP command's two runs (``_without_servers``), by its words."""
    homes = {" ".join(args): tmp_path_factory.mktemp("newcomer") / "home" for args in NOT_UP}
    return _concurrently(
        {
            " ".join(args): functools.partial(_without_servers, args, homes[" ".join(args)])
            for args in NOT_UP
        }
    )


@pytest.mark.parametrize("args", NOT_UP, ids=" ".join)
def test_no_command_but_up_starts_the_embedded_servers(
    args: list[str], without_servers: dict[str, WithoutServers]
) -> None:
    outcome = without_servers[" ".join(args)]
    line = _one_error_line(outcome.fresh)
    assert "is not running: start the stack with `.venv/bin/syncguard up` (or `make run`)" in line
    assert not outcome.created_home  # nothing started, nothing created
    _one_error_line(outcome.stopped)
    assert not outcome.created_postgres


# --- point 7: one line for bad input and missing configuration ------------------------------


@pytest.fixture(scope="module")
def unreachable() -> dict[str, subprocess.CompletedProcess[str]]:
    """Every NEEDS_THE_STACK command run against servers nobody listens on, by its words."""
    env = {**os.environ, **UNREACHABLE}
    return _concurrently(
        {" ".join(args): functools.partial(_run, args, env) for args in NEEDS_THE_STACK}
    )


@pytest.mark.parametrize("args", NEEDS_THE_STACK, ids=" ".join)
def test_an_unreachable_database_is_one_error_line(
    args: list[str], unreachable: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    line = _one_error_line(unreachable[" ".join(args)])
    assert "127.0.0.1" in line or "database" in line or "Redis" in line


def test_verbose_adds_the_traceback_to_the_error_line() -> None:
    done = _run(["-v", "api-key", "list"], {**os.environ, **UNREACHABLE})
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "OperationalError" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("Error: database error: ")


@pytest.mark.parametrize(
    ("variable", "value"),
    [("SYNCGUARD_API_PORT", "not-a-port"), ("SYNCGUARD_SAFEGUARD_FAIL_MODE", "secret-value")],
)
def test_bad_configuration_is_one_error_line_naming_the_variable(variable: str, value: str) -> None:
    line = _one_error_line(_run(["status"], {**os.environ, variable: value}))
    assert line.startswith(f"Error: invalid configuration: {variable}: ")
    assert value not in line  # a setting's value may be a secret


def test_store_connect_in_production_without_keys_is_one_error_line(engine: Engine) -> None:
    with service_session(engine) as session:
        store_id = make_store(session, make_business(session, "Prod")).id
    env = {
        **os.environ,
        "SYNCGUARD_ENVIRONMENT": "production",
        "SYNCGUARD_OAUTH_CLIENT_ID": "client",
        "SYNCGUARD_OAUTH_CLIENT_SECRET": "secret-value",
        "SYNCGUARD_OAUTH_REFRESH_TOKEN": "refresh-value",
    }
    env.pop("SYNCGUARD_ENCRYPTION_KEYS", None)
    line = _one_error_line(_run(["store", "connect", str(store_id)], env))
    assert "SYNCGUARD_ENCRYPTION_KEYS is required in production" in line


# --- point 9: production refuses to start without its keys ----------------------------------


@pytest.mark.parametrize("args", [["up", "--no-flower"], ["api", "--port", "1"]], ids=" ".join)
def test_production_refuses_to_start_without_encryption_keys(args: list[str]) -> None:
    env = {**os.environ, "SYNCGUARD_ENVIRONMENT": "production"}
    env.pop("SYNCGUARD_ENCRYPTION_KEYS", None)
    line = _one_error_line(_run(args, env))
    assert "SYNCGUARD_ENCRYPTION_KEYS is required in production" in line
    env["SYNCGUARD_ENCRYPTION_KEYS"] = "not-a-fernet-key"
    assert "not a valid Fernet key" in _one_error_line(_run(args, env))


# --- point 10: Flower's login ---------------------------------------------------------------


def test_production_refuses_flower_without_its_login() -> None:
    env = {
        **os.environ,
        "SYNCGUARD_ENVIRONMENT": "production",
        "SYNCGUARD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    }
    env.pop("SYNCGUARD_FLOWER_BASIC_AUTH", None)
    line = _one_error_line(_run(["up"], env))
    assert "set SYNCGUARD_FLOWER_BASIC_AUTH=user:password" in line


def test_up_gives_flower_its_login_in_the_environment_not_the_command_line() -> None:
    [flower] = [
        c for c in stack_children(Settings(), flower_login="ops:pw-123") if c.name == "flower"
    ]
    assert flower.env == {"FLOWER_BASIC_AUTH": "ops:pw-123"}
    assert not any("pw-123" in arg for arg in flower.argv)  # argv shows in `ps` and the log


# --- point 1: API keys in the CLI -----------------------------------------------------------


def _syncguard(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_api_key_create_list_revoke(engine: Engine) -> None:
    with service_session(engine) as session:
        business = make_business(session, "Keys")
        slug, business_id = business.slug, business.id
    operator = _syncguard("api-key", "create", "Ops on-call")
    assert operator.exit_code == 0, operator.output
    key_line, plaintext = operator.stdout.splitlines()[:2]
    principal = verify(plaintext)
    assert principal is not None and principal.role is ApiKeyRole.OPERATOR
    assert key_line == f"key {principal.key_id} created (operator: every business)"
    tenant = _syncguard("api-key", "create", "Viewer", "--business", slug)
    assert tenant.exit_code == 0, tenant.output
    tenant_principal = verify(tenant.stdout.splitlines()[1])
    assert tenant_principal is not None and tenant_principal.business_id == business_id
    listed = _syncguard("api-key", "list").stdout
    assert str(principal.key_id) in listed and "Ops on-call" in listed and slug in listed
    assert plaintext[:12] in listed and plaintext not in listed  # the prefix, never the key
    assert _syncguard("api-key", "revoke", str(principal.key_id)).exit_code == 0
    assert verify(plaintext) is None
    assert str(principal.key_id) not in _syncguard("api-key", "list").stdout
    assert str(principal.key_id) in _syncguard("api-key", "list", "--all").stdout
    again = _syncguard("api-key", "revoke", str(principal.key_id))
    assert again.exit_code == 1 and f"Error: no unrevoked key {principal.key_id}" in again.output


@pytest.mark.parametrize("business", [str(ABSENT_ID), "no-such-business"])
def test_api_key_for_a_business_that_does_not_exist_is_one_error_line(business: str) -> None:
    done = _run(["api-key", "create", "Viewer", "--business-id", business], dict(os.environ))
    assert _one_error_line(done) == f"Error: no business {business}"


# --- point 5: the shell reaches the stack ---------------------------------------------------


def test_env_prints_export_lines_a_shell_can_eval() -> None:
    printed = 'printf "%s\\n%s\\n%s" "$DATABASE_URL" "$REDIS_URL" "$BROKER_URL"'
    script = f'eval "$({SYNCGUARD} env)" && {printed}'
    env = {k: v for k, v in os.environ.items() if k != "BROKER_URL"}
    done = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    redis_url = os.environ["REDIS_URL"]
    assert done.stdout.splitlines() == [os.environ["DATABASE_URL"], redis_url, redis_url]


def test_psql_opens_the_stacks_database() -> None:
    done = _run(["psql", "--", "-tAc", "SELECT current_database()"], dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == os.environ["DATABASE_URL"].rsplit("/", 1)[1]


# --- point 2: where everything is, and how to log in ----------------------------------------


def test_the_banner_names_every_url_and_where_the_dashboard_login_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(home=tmp_path, api_port=8123, flower_port=5678, emulator_port=9876)
    _banner(settings, flower=True, demo=True)
    shown = capsys.readouterr().out
    for url in ("8123/dashboard", "8123/docs", "8123/metrics", "5678/", "9876/"):
        assert f"http://127.0.0.1:{url}" in shown
    key_file = tmp_path / OPERATOR_KEY_FILE
    assert f"cat {key_file}" in shown and f"cat {tmp_path}/flower.password" in shown
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    principal = verify(key)
    assert principal is not None and principal.is_operator
    assert key not in shown  # named by its file, never printed


def test_the_development_operator_key_is_minted_once_and_replaced_when_revoked(
    tmp_path: Path,
) -> None:
    from api.api_keys import revoke_key

    settings = Settings(home=tmp_path)
    first = development_operator_key(settings).read_text()
    assert development_operator_key(settings).read_text() == first  # a restart keeps it
    principal = verify(first.strip())
    assert principal is not None
    revoke_key(principal.key_id)
    assert development_operator_key(settings).read_text() != first


def test_root_leads_to_the_dashboard_and_docs_are_served() -> None:
    with TestClient(create_app(), follow_redirects=False) as client:
        root = client.get("/")
        assert root.status_code == 307 and root.headers["location"] == "/dashboard"
        docs = client.get("/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        assert "/api/v1/status" in client.get("/openapi.json").json()["paths"]


# --- point 4: quiet by default --------------------------------------------------------------


def test_up_is_quiet_unless_verbose() -> None:
    quiet = {c.name: list(c.argv) for c in stack_children(Settings(), demo=True)}
    loud = {c.name: list(c.argv) for c in stack_children(Settings(), demo=True, verbose=True)}
    for name in ("worker", "beat"):
        # -q: no banner; WARNING: no line per task run (the safeguard mirror runs every 5 s).
        assert "-q" in quiet[name] and quiet[name][quiet[name].index("-l") + 1] == "warning"
        assert "-q" not in loud[name] and loud[name][loud[name].index("-l") + 1] == "info"
    assert "--logging=warning" in quiet["flower"] and "--logging=info" in loud["flower"]
    assert "--no-access-log" in quiet["emulator"] and "--no-access-log" not in loud["emulator"]
    assert "-v" in loud["demo"] and "-v" not in quiet["demo"]


def test_routine_maintenance_runs_leave_no_line_in_a_worker_at_info(tmp_path: Path) -> None:
    # The safeguard mirror runs every 5 s: at INFO a worker would log two lines a run.
    purge_queues()
    log_path = tmp_path / "worker.log"
    argv = [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-l", "info", "-P", "solo"]
    argv += ["-Q", ",".join(QUEUE_NAMES), "-n", f"quiet-{uuid.uuid4().hex[:6]}@%h"]
    argv += ["--without-mingle", "--without-gossip", "--without-heartbeat"]
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        eventually(lambda: " ready." in log_path.read_text(), timeout_s=60)
        for _ in range(3):
            assert set(mirror_safeguard_state.delay().get(timeout=60)) == {
                "rate_limits",
                "circuits",
            }
        assert heartbeat.delay().get(timeout=60)["redis_ping"] is True
        run_all_cleanup_tasks.delay(dry_run=True).get(timeout=120)
    finally:
        stop(proc)
        purge_queues()
    lines = log_path.read_text()
    assert "mirror_safeguard_state[" not in lines and "heartbeat[" not in lines
    # Other tasks keep their lines: the filter is not the worker's level.
    assert "tasks.maintenance.run_all_cleanup_tasks[" in lines and "succeeded in" in lines


# --- point 1: the README's commands work as written -----------------------------------------

README = Path(__file__).resolve().parent.parent / "README.md"
#: Tools `make run` installs into .venv: typed from the project root, they need the prefix.
VENV_TOOLS = ("syncguard", "celery", "python", "pytest", "pip")


def _readme_shell_lines() -> list[str]:
    """Every line of the README's ``sh`` code blocks, without leading variable assignments."""
    lines, inside = [], False
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```sh"
            continue
        if inside and line.strip() and not line.startswith(" "):
            lines.append(re.sub(r"^([A-Z_]+=\S+\s+)+", "", line))
    return lines


def test_the_readme_types_every_installed_tool_with_its_venv_prefix() -> None:
    bare = [line for line in _readme_shell_lines() if line.split()[0] in VENV_TOOLS]
    assert bare == []  # `make run` puts nothing on PATH: `.venv/bin/<tool>` or it fails


def test_every_syncguard_command_in_the_readme_exists() -> None:
    named = set()
    for line in _readme_shell_lines():
        words = line.split()
        if words[0] == ".venv/bin/syncguard" and not words[1].startswith("-"):
            named.add((words[1], words[2] if len(words) > 2 else ""))
    assert named, "the README names no syncguard command"
    for command, sub in named:
        assert command in main.commands, f"README: `syncguard {command}` is no such command"
        group = main.commands[command]
        if isinstance(group, click.Group) and sub and not sub.startswith(("-", "[")):
            subs = sub.split("|")  # `api-key create|list|revoke`
            assert all(s in group.commands for s in subs), f"README: `{command} {sub}`"


@pytest.mark.parametrize("level", ["info", "debug"])
def test_beat_logs_the_mirrors_runs_only_at_debug(
    level: str, tmp_path: Path, redis_client: redis.Redis
) -> None:
    # The mirror is due every 5 s: Beat at INFO would log a line each time.
    purge_queues()
    queue = f"{os.environ['SYNCGUARD_REDIS_PREFIX']}{MAINTENANCE}"  # kombu's list of the queue
    log_path = tmp_path / "beat.log"
    argv = [sys.executable, "-m", "celery", "-A", "tasks", "beat", "-l", level]
    argv += ["-s", str(tmp_path / "schedule")]
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        # Published after its log line: once the run is queued, the line is written or not.
        eventually(lambda: redis_client.llen(queue) > 0, timeout_s=60)
    finally:
        stop(proc)
        purge_queues()
    sent = "Sending due task maintenance.mirror_safeguard_state" in log_path.read_text()
    assert sent is (level == "debug")
