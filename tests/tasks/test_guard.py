"""The per-call guard when the safeguards' Redis is unreachable, and the countdown ceiling."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import Engine, text

from syncguard.db import service_session
from syncguard.settings import Settings
from tests.factories import make_business, make_store

PROBE = """
import sys, uuid
from models import Provider
from safeguards.errors import RateLimited
from safeguards.health_metrics.recorder import METRICS
from tasks.guard import CallScope, guarded_call

scope = CallScope(uuid.UUID(sys.argv[1]), Provider.GMAIL, "gmail")
try:
    with guarded_call(scope, "messages.get"):
        print("CALLED")
except RateLimited as refused:
    print(f"REFUSED {refused.retry_after_s}")
METRICS.flush()
"""


def _unavailable_metrics(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM system_health_metrics "
                    "WHERE metric_name = 'safeguard_unavailable'"
                )
            ).scalar_one()
        )


@pytest.mark.parametrize(("mode", "expected"), [("open", "CALLED"), ("closed", "REFUSED 7.0")])
def test_unreachable_redis_applies_the_fail_mode_with_a_metric(
    engine: Engine, mode: str, expected: str
) -> None:
    with service_session(engine) as session:
        store_id = str(make_store(session, make_business(session)).id)
    before = _unavailable_metrics(engine)
    env = {
        **os.environ,
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "SYNCGUARD_SAFEGUARD_FAIL_MODE": mode,
        "SYNCGUARD_FAIL_CLOSED_RETRY_S": "7",
    }
    run = subprocess.run(
        [sys.executable, "-c", PROBE, store_id], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == expected
    assert f"failing {mode}" in run.stderr  # never a silent fallback: a log line says so
    assert _unavailable_metrics(engine) > before


def test_no_countdown_can_outlast_the_visibility_timeout() -> None:
    import celeryconfig

    settings = Settings()
    assert settings.max_backoff_s + settings.task_time_limit_s < celeryconfig.VISIBILITY_TIMEOUT_S
    assert (
        celeryconfig.result_backend_transport_options["visibility_timeout"]
        == celeryconfig.VISIBILITY_TIMEOUT_S
    )
