"""A database error caused by the data is permanent; a lost connection stays transient.

The classifier is a pure function; the lifecycle runs a real SafeguardedTask in-process
(``apply``) against real PostgreSQL and Redis, with the DataError raised by the real server.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from models import FailureCategory
from safeguards import ArchiveFilter, list_entries
from safeguards.errors import TransientFailure, ValidationFailure
from syncguard.db import service_session
from tasks import app
from tasks.base import SafeguardedTask
from tasks.guard import default_classifier
from tasks.queues import MAINTENANCE
from tests.factories import make_business, make_store

RUNS: dict[str, int] = {}


@app.task(  # type: ignore[untyped-decorator]
    bind=True,
    base=SafeguardedTask,
    name="tests.tasks.write_bad_text",
    max_retries=3,
    queue=MAINTENANCE,
)
def write_bad_text(self: SafeguardedTask, store_id: str, marker: str) -> None:
    """Writes a NUL into a text column: PostgreSQL refuses it the same way every time."""
    RUNS[marker] = RUNS.get(marker, 0) + 1
    with service_session() as session:
        session.execute(text("SELECT CAST(:v AS text)"), {"v": "Invoice\x00 #42"})


def _real_error(
    engine: Engine, sql: str, params: dict[str, Any], setup: str | None = None
) -> Exception:
    with engine.connect() as conn:
        if setup:
            conn.execute(text(setup))
        try:
            conn.execute(text(sql), params)
        except Exception as exc:
            return exc
    raise AssertionError(f"{sql} did not fail")


def test_data_and_integrity_errors_are_validation_failures(engine: Engine) -> None:
    nul = _real_error(engine, "SELECT CAST(:v AS text)", {"v": "Invoice\x00 #42"})
    surrogate = _real_error(engine, "SELECT CAST(:v AS text)", {"v": "a\ud800"})
    overflow = _real_error(engine, "SELECT CAST(:v AS bigint)", {"v": 2**70})
    not_null = _real_error(
        engine,
        "INSERT INTO t VALUES (:v)",
        {"v": None},
        setup="CREATE TEMP TABLE t (x int NOT NULL)",
    )
    assert isinstance(nul, DataError) and isinstance(overflow, DataError)
    assert isinstance(surrogate, UnicodeEncodeError)
    assert isinstance(not_null, IntegrityError)
    for exc in (nul, surrogate, overflow, not_null):
        failure = default_classifier(exc)
        assert isinstance(failure, ValidationFailure), exc
        assert failure.category is FailureCategory.VALIDATION
    # The reason names the database's error, not the provider's content
    assert "Invoice" not in str(default_classifier(nul))


def test_a_lost_connection_is_not_a_data_error() -> None:
    closed = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/postgres")
    with pytest.raises(OperationalError) as caught:
        closed.connect()
    assert not isinstance(default_classifier(caught.value), ValidationFailure)
    assert isinstance(default_classifier(ConnectionRefusedError()), TransientFailure)


def test_a_data_error_is_archived_at_once_as_validation_without_retries(engine: Engine) -> None:
    with service_session(engine) as session:
        store_id = str(make_store(session, make_business(session)).id)
    marker = uuid.uuid4().hex

    result = write_bad_text.apply(args=[store_id, marker])

    assert result.state == "FAILURE"
    assert RUNS[marker] == 1  # no retry was spent on it
    [entry] = list_entries(ArchiveFilter(store_id=uuid.UUID(store_id)))
    assert entry.failure_category is FailureCategory.VALIDATION
    assert entry.retry_count == 0
    assert "DataError" in entry.failure_reason
