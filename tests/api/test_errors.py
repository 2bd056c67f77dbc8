"""The last-resort error handling of the app: a value SQL refuses is a 400, and no log quotes it.

Every route validates its inputs (``api.params``), so these probes are routes added to a real
app only here: one runs SQL with a value PostgreSQL refuses (as a route that forgot to validate
would), one fails with an error whose text carries the bound value (as any bug could).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy.exc
from fastapi import FastAPI
from sqlalchemy import text

from api import create_app
from syncguard.db import service_session
from tests.api.conftest import serve

#: A value that must never be logged (a mistyped secret, say).
SECRET = "hunter2-pasted-by-mistake"


def _refused_by_postgres() -> None:
    with service_session() as session:
        session.execute(text("SELECT :value = 'x'"), {"value": f"{SECRET}\x00"})


def _unexpected_failure() -> None:
    with service_session() as session:
        session.execute(text("SELECT no_such_column WHERE :value = 'x'"), {"value": SECRET})


@pytest.fixture(scope="module")
def probe_url(engine: object) -> Iterator[str]:
    """A real app served over HTTP, with the two probe routes."""
    app: FastAPI = create_app()
    app.add_api_route("/probe/refused", _refused_by_postgres, methods=["GET"])
    app.add_api_route("/probe/crash", _unexpected_failure, methods=["GET"])
    url, server, thread = serve(app)
    yield url
    server.should_exit = True
    thread.join(timeout=10)


def test_a_value_postgres_refuses_is_a_400_logged_without_the_value(
    probe_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        response = httpx.get(f"{probe_url}/probe/refused", timeout=10)
    assert response.status_code == 400
    assert response.json() == {"error": "a request value is not valid text or is out of range"}
    assert "GET /probe/refused: a request value reached SQL unvalidated: DataError" in caplog.text
    assert "_refused_by_postgres" in caplog.text  # the stack is kept
    assert SECRET not in caplog.text and SECRET not in response.text


def test_an_unexpected_failure_is_a_500_logged_without_the_value(
    probe_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        response = httpx.get(f"{probe_url}/probe/crash", timeout=10)
    assert response.status_code == 500
    assert response.json() == {"error": "internal error"}
    assert "ProgrammingError (SQLSTATE 42703)" in caplog.text  # undefined_column
    assert "_unexpected_failure" in caplog.text
    assert SECRET not in caplog.text and SECRET not in response.text


def test_a_database_error_never_carries_the_bound_values(engine: object) -> None:
    # Outage paths log with the traceback (api.auth, api.intake) and workers archive theirs:
    # the engine itself keeps values out of every error's text.
    with pytest.raises(sqlalchemy.exc.DataError) as caught:
        _refused_by_postgres()
    assert "[SQL parameters hidden due to hide_parameters=True]" in str(caught.value)
    assert SECRET not in str(caught.value)
