"""ArchivingTask's category rule, and that an in-process run is left to its caller."""

from __future__ import annotations

import uuid

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import task_internal_error
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import Engine, Text, cast, func, select
from sqlalchemy.exc import OperationalError

from models import FailedJobArchive, FailureCategory
from safeguards.errors import AuthenticationFailure, SafeguardUnavailable, ValidationFailure
from syncguard.db import service_session
from tasks.archiving import ArchivingTask, failure_category
from tasks.maintenance import heartbeat


@pytest.mark.parametrize(
    ("exc", "retries", "category"),
    [
        (ValueError("badly formed hexadecimal UUID string"), 0, FailureCategory.VALIDATION),
        (KeyError("endpoint_id"), 0, FailureCategory.VALIDATION),
        (ValueError("still bad after a retry"), 1, FailureCategory.TRANSIENT_EXHAUSTED),
        (AuthenticationFailure("invalid_grant"), 0, FailureCategory.AUTHENTICATION),
        (ValidationFailure("no store"), 0, FailureCategory.VALIDATION),
        (
            OperationalError("SELECT 1", {}, Exception("down")),
            0,
            FailureCategory.TRANSIENT_EXHAUSTED,
        ),
        (RedisConnectionError("refused"), 0, FailureCategory.TRANSIENT_EXHAUSTED),
        (ConnectionResetError(), 0, FailureCategory.TRANSIENT_EXHAUSTED),
        (TimeoutError(), 0, FailureCategory.TRANSIENT_EXHAUSTED),
        (SafeguardUnavailable("redis"), 0, FailureCategory.TRANSIENT_EXHAUSTED),
        (SoftTimeLimitExceeded(), 0, FailureCategory.TRANSIENT_EXHAUSTED),
    ],
)
def test_failure_category(exc: BaseException, retries: int, category: FailureCategory) -> None:
    assert failure_category(exc, retries) == category


def test_every_task_of_the_app_derives_from_archiving_task() -> None:
    from tasks import app

    ours = [task for name, task in app.tasks.items() if not name.startswith("celery.")]
    assert ours and all(isinstance(task, ArchivingTask) for task in ours)


def test_an_in_process_run_with_wrong_arguments_raises_and_archives_nothing(
    engine: Engine,
) -> None:
    marker = "in-process-wrong-args-7f3a"

    result = heartbeat.apply(args=[marker])

    assert result.failed() and isinstance(result.result, ValidationFailure)
    with service_session(engine) as session:
        archived = session.scalar(
            select(func.count()).where(cast(FailedJobArchive.job_data, Text).contains(marker))
        )
    assert archived == 0


def test_an_internal_error_archives_the_job_with_what_is_known(engine: Engine) -> None:
    task_id = f"internal-{uuid.uuid4()}"
    request = {
        "id": task_id,
        "args": ["x"],
        "kwargs": {"token": "ya29.a0AfH6SMBsecretsecretsecret"},
        "delivery_info": {"routing_key": "maintenance"},
        "hostname": "worker@test",
        "retries": 0,
    }

    # What Celery's tracer sends when storing a run's outcome fails (result backend down).
    task_internal_error.send(
        sender=heartbeat,
        task_id=task_id,
        args=["x"],
        kwargs=request["kwargs"],
        request=request,
        exception=RedisConnectionError("result backend unreachable"),
        traceback=None,
        einfo=None,
    )

    with service_session(engine) as session:
        row = session.scalar(select(FailedJobArchive).where(FailedJobArchive.job_id == task_id))
        assert row is not None
        assert row.job_type == "tasks.maintenance.heartbeat"
        assert row.failure_category == FailureCategory.TRANSIENT_EXHAUSTED
        assert row.job_data["kwargs"] == {"token": "[REDACTED]"}
        assert row.job_data["options"]["queue"] == "maintenance"
        assert "outcome unknown" in row.failure_reason
