"""Flower shows every task by name with its arguments redacted: a real worker and a real Flower."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from safeguards.redaction import REDACTED
from syncguard.cli.up import stack_children
from syncguard.settings import Settings
from tasks import app
from tasks.maintenance import heartbeat
from tasks.outbound.delivery import TASK_NAME as DELIVER_EVENT
from tasks.outbound.delivery import deliver_event
from tasks.queues import MAINTENANCE, WEBHOOKS
from tasks.redaction_hooks import UNREDACTABLE, redact_message_reprs
from tests.sync_support import eventually
from tests.worker import running_worker, stop

#: How long Flower may take to answer its health check, seconds.
START_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: The basic-auth login the test's Flower is started with (as `syncguard up` starts it).
LOGIN = ("syncguard", f"test-{uuid.uuid4().hex}")


@pytest.fixture(scope="module")
def flower() -> Iterator[httpx.Client]:
    """A real Flower started as ``syncguard up`` starts it, with a login; a client that has it."""
    port = _free_port()
    settings = Settings(flower_port=port)
    [child] = [
        c for c in stack_children(settings, flower_login=":".join(LOGIN)) if c.name == "flower"
    ]
    log_path = Path(tempfile.mkstemp(prefix="flower-", suffix=".log")[1])
    env = {**os.environ, **child.env}
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            list(child.argv), env=env, stdout=log, stderr=subprocess.STDOUT, text=True
        )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5.0, auth=LOGIN)
    try:
        eventually(lambda: _healthy(client, proc, log_path), timeout_s=START_TIMEOUT_S)
        yield client
    finally:
        client.close()
        stop(proc)
        sys.stderr.write(f"[flower log: {log_path}]\n")


def test_flowers_http_api_asks_for_the_login(flower: httpx.Client) -> None:
    # Without authentication configured, Flower's API would answer 401 to everyone
    # ("FLOWER_UNAUTHENTICATED_API environment variable is required").
    url = str(flower.base_url.join("/api/workers"))
    assert httpx.get(url, timeout=5.0).status_code == 401
    assert httpx.get(url, timeout=5.0, auth=("syncguard", "wrong")).status_code == 401
    assert flower.get("/api/workers").status_code == 200


def _healthy(client: httpx.Client, proc: subprocess.Popen[str], log_path: Path) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"flower exited:\n{log_path.read_text()[-3000:]}")
    try:
        return client.get("/healthcheck").status_code == 200
    except httpx.TransportError:
        return False


def _task_info(flower: httpx.Client, task_id: str) -> dict[str, Any] | None:
    reply = flower.get(f"/api/task/info/{task_id}")
    return reply.json() if reply.status_code == 200 else None


def _shown(flower: httpx.Client, publish: Callable[[], str], state: str) -> dict[str, Any] | None:
    # Flower sees only events emitted after it connected: publish again until it reports one.
    task_id = publish()
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        info = _task_info(flower, task_id)
        if info and info.get("state") == state:
            return info
        time.sleep(0.2)
    return None


def _publish_heartbeat() -> str:
    return str(heartbeat.apply_async(queue=MAINTENANCE).id)


def _secret_kwargs(access_token: str, oauth_token: str) -> dict[str, Any]:
    # A real outbound delivery to an endpoint that does not exist: it runs, and drops the event.
    return {
        "endpoint_id": str(uuid.uuid4()),
        "message_id": f"msg_{uuid.uuid4().hex}",
        "event_type": "test.redaction",
        # One secret by its key's name, one by its shape (a Google access token).
        "payload": {"access_token": access_token, "note": f"token is {oauth_token}"},
    }


def _secrets() -> tuple[str, str]:
    return f"s3cr3t-{uuid.uuid4().hex}", f"ya29.{uuid.uuid4().hex}"


@pytest.mark.slow
def test_a_run_task_shows_its_name_and_redacted_arguments(flower: httpx.Client) -> None:
    # Given a worker and a Flower that receives its events
    with running_worker():
        eventually(lambda: _shown(flower, _publish_heartbeat, "SUCCESS"), timeout_s=60.0)
        access_token, oauth_token = _secrets()
        # When a task whose kwargs carry secrets runs
        task_id = deliver_event.apply_async(
            kwargs=_secret_kwargs(access_token, oauth_token), queue=WEBHOOKS
        ).id
        info = eventually(
            lambda: (i := _task_info(flower, task_id)) and i.get("state") == "SUCCESS" and i
        )
        listing = flower.get("/api/tasks").text
    # Then Flower names it and shows its arguments, every secret masked
    assert info["name"] == DELIVER_EVENT
    assert f"'access_token': '{REDACTED}'" in info["kwargs"]
    assert f"'note': 'token is {REDACTED}'" in info["kwargs"]
    assert task_id in listing and DELIVER_EVENT in listing
    for text in (repr(info), listing):
        assert access_token not in text and oauth_token not in text
        assert REDACTED in text


@pytest.mark.slow
def test_a_task_no_worker_took_shows_redacted_arguments_from_its_sent_event(
    flower: httpx.Client,
) -> None:
    # Given a task published to a queue nobody consumes: Flower knows it from task-sent only
    access_token, oauth_token = _secrets()
    queue = f"flower-test-{uuid.uuid4().hex[:6]}"

    def publish() -> str:
        kwargs = _secret_kwargs(access_token, oauth_token)
        return str(app.send_task(DELIVER_EVENT, kwargs=kwargs, queue=queue).id)

    # When Flower reports it
    info = eventually(lambda: _shown(flower, publish, "PENDING"), timeout_s=60.0)
    # Then its sent event carried the redacted copy, not the secrets
    assert info["name"] == DELIVER_EVENT
    assert info["state"] == "PENDING"
    assert REDACTED in info["kwargs"]
    assert access_token not in repr(info) and oauth_token not in repr(info)


def test_the_publish_hook_redacts_whatever_display_copy_a_caller_built() -> None:
    headers = {"argsrepr": "['Bearer abcdefgh123']", "kwargsrepr": "{'password': 'hunter22'}"}
    body: tuple[Any, ...] = (
        ["Bearer abcdefgh123"],
        {"password": "hunter22", "store_id": "s-1"},
        {},
    )
    redact_message_reprs(sender="tasks.example", body=body, headers=headers)
    assert headers == {
        "argsrepr": f"['Bearer {REDACTED}']",
        "kwargsrepr": f"{{'password': '{REDACTED}', 'store_id': 's-1'}}",
    }


def test_arguments_that_cannot_be_redacted_are_hidden() -> None:
    class Unprintable:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    headers: dict[str, Any] = {}
    redact_message_reprs(sender="tasks.example", body=([Unprintable()], {}, {}), headers=headers)
    assert headers["argsrepr"] == UNREDACTABLE
