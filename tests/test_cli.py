"""The `syncguard` CLI: `sync` on real stores, `emulator` as a real server, `up`'s wiring."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid

import httpx
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, update

from models import Provider, Store, StoreStatus, SyncJob, SyncJobStatus, SyncTrigger
from providers.emulator.config import EmulatorConfig
from providers.emulator.runner import free_port, running_emulator
from syncguard.cli.main import main, stack_children
from syncguard.cli.up import child_env as _child_env
from syncguard.db import service_session
from syncguard.services import ServiceURLs
from syncguard.settings import Settings
from tests.sync_support import (
    connect_store,
    emulator_env,
    eventually,
    jobs_of,
    local_copy,
    mailbox_copy,
    wait_for_job,
)
from tests.worker import running_worker

JOB_LINE = re.compile(r"^sync job ([0-9a-f-]{36}) queued for store ", re.MULTILINE)


def _syncguard(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_sync_rejects_a_malformed_store_id() -> None:
    result = _syncguard("sync", "not-a-uuid")
    assert result.exit_code == 2
    assert "'not-a-uuid' is not a valid UUID" in result.output


def test_sync_rejects_an_unknown_store() -> None:
    store_id = uuid.uuid4()
    result = _syncguard("sync", str(store_id))
    assert result.exit_code == 1
    assert f"Error: no store {store_id}" in result.output


def test_sync_refuses_a_store_that_is_not_active(engine: Engine) -> None:
    with running_emulator() as emulator:
        store_id, _ = connect_store(engine, emulator, Provider.GMAIL)
    with service_session(engine) as session:
        session.execute(
            update(Store)
            .where(Store.id == store_id)
            .values(status=StoreStatus.NEEDS_REAUTH, status_reason="grant revoked")
        )
    result = _syncguard("sync", str(store_id))
    assert result.exit_code == 1
    assert f"store {store_id} is needs_reauth: grant revoked" in result.output
    assert jobs_of(engine, store_id) == []


def test_sync_queues_a_job_and_folds_a_second_request_into_it(
    engine: Engine,
) -> None:
    with running_emulator() as emulator:
        store_id, mailbox = connect_store(engine, emulator, Provider.OUTLOOK)
        for n in range(3):
            mailbox.add(f"order {n}")

        first = _syncguard("sync", str(store_id))  # no worker yet: the job stays queued
        assert first.exit_code == 0, first.output
        match = JOB_LINE.search(first.output)
        assert match is not None, first.output
        job_id = uuid.UUID(match.group(1))
        with service_session(engine) as session:
            job = session.get(SyncJob, job_id)
            assert job is not None and job.store_id == store_id
            assert (job.status, job.trigger) == (SyncJobStatus.QUEUED, SyncTrigger.MANUAL)

        second = _syncguard("sync", str(store_id))
        assert second.exit_code == 0, second.output
        assert second.output.strip() == f"folded into the pending sync of store {store_id}"

        with running_worker(env=emulator_env(emulator), purge_first=False):
            assert wait_for_job(engine, job_id).status is SyncJobStatus.SUCCEEDED
        # The folded request arrived before the run started, so that run covered it.
        assert [j.id for j in jobs_of(engine, store_id)] == [job_id]
        assert local_copy(engine, store_id) == mailbox_copy(mailbox, Provider.OUTLOOK)


def test_emulator_command_serves_until_sigterm() -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "syncguard.cli", "emulator", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:

        def answers() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/_emulator/push").status_code == 200
            except httpx.TransportError:
                return False

        eventually(answers, timeout_s=20)
        grant = httpx.post(
            f"http://127.0.0.1:{port}/_emulator/mailboxes",
            json={"provider": "gmail", "address": "cli@example.com"},
        )
        assert grant.status_code == 201 and grant.json()["refresh_token"]
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
    # Uvicorn shuts down gracefully, then re-raises the signal so the exit status tells it.
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output


@pytest.mark.parametrize("environment", ["development", "production"])
def test_up_runs_the_emulator_and_demo_children_only_with_the_demo(environment: str) -> None:
    settings = Settings(environment=environment, emulator_port=9876, api_port=8123)
    with_demo = [c.name for c in stack_children(settings, demo=True)]
    assert with_demo == ["worker", "beat", "flower", "api", "emulator", "demo"]
    assert [c.name for c in stack_children(settings)] == ["worker", "beat", "flower", "api"]
    [demo] = [c for c in stack_children(settings, demo=True) if c.name == "demo"]
    assert list(demo.argv[-6:]) == [
        "demo",
        "--emulator-url",
        "http://127.0.0.1:9876",
        "--api-url",
        "http://127.0.0.1:8123",
        "--follow",
    ]


def test_up_runs_the_api_through_syncguard_api_on_the_api_port() -> None:
    # `syncguard api` starts uvicorn with the scrubbing log configuration (tests/api/
    # test_secrets_in_logs.py runs this very command line).
    children = stack_children(Settings(api_port=8123), beat=False, flower=False)
    [api] = [c for c in children if c.name == "api"]
    assert list(api.argv) == [
        sys.executable,
        *("-m", "syncguard.cli", "api", "--host", "127.0.0.1", "--port", "8123"),
    ]


def test_up_points_every_child_at_the_emulator_only_with_the_demo() -> None:
    settings = Settings(emulator_port=9876)
    urls = ServiceURLs("postgresql+psycopg://db/x", "redis://r/0", "redis://r/0")
    env = _child_env(settings, urls, "http://127.0.0.1:9876")
    assert env["SYNCGUARD_GMAIL_API_URL"] == env["SYNCGUARD_GRAPH_API_URL"]
    assert env["SYNCGUARD_GMAIL_TOKEN_URL"] == "http://127.0.0.1:9876/oauth2/token"
    assert env["SYNCGUARD_GRAPH_TOKEN_URL"] == "http://127.0.0.1:9876/oauth2/token"
    assert env["DATABASE_URL"] == "postgresql+psycopg://db/x"
    plain = _child_env(settings, urls)
    assert plain.get("SYNCGUARD_GMAIL_API_URL") == os.environ.get("SYNCGUARD_GMAIL_API_URL")


def test_up_has_the_api_trust_the_emulators_push_tokens_only_with_the_demo() -> None:
    settings = Settings(emulator_port=9876)
    urls = ServiceURLs("postgresql+psycopg://db/x", "redis://r/0", "redis://r/0")
    env = _child_env(settings, urls, "http://127.0.0.1:9876")
    certs = "http://127.0.0.1:9876/_emulator/oauth2/v3/certs"
    assert env["SYNCGUARD_GMAIL_PUSH_JWKS_URL"] == certs
    assert env["SYNCGUARD_GMAIL_PUSH_SERVICE_ACCOUNT"] == EmulatorConfig().service_account_email
    # A push service account the user chose wins: the demo makes the emulator sign as it.
    chosen = Settings(emulator_port=9876, gmail_push_service_account="push@example.iam")
    env = _child_env(chosen, urls, "http://127.0.0.1:9876")
    assert env["SYNCGUARD_GMAIL_PUSH_SERVICE_ACCOUNT"] == "push@example.iam"
    plain = _child_env(settings, urls)
    assert plain.get("SYNCGUARD_GMAIL_PUSH_JWKS_URL") == os.environ.get(
        "SYNCGUARD_GMAIL_PUSH_JWKS_URL"
    )


def test_up_tells_the_children_the_apis_url_unless_a_public_one_is_set() -> None:
    urls = ServiceURLs("postgresql+psycopg://db/x", "redis://r/0", "redis://r/0")
    env = _child_env(Settings(api_port=8123), urls)
    assert env["SYNCGUARD_PUBLIC_BASE_URL"] == "http://127.0.0.1:8123"
    public = Settings(api_port=8123, public_base_url="https://hooks.example.com/")
    env = _child_env(public, urls, "http://127.0.0.1:9876")
    assert env["SYNCGUARD_PUBLIC_BASE_URL"] == "https://hooks.example.com"
