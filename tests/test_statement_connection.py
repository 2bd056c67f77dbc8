"""syncguard.db.statement_connection on a real PostgreSQL: autocommit, and no ping at checkout
made up for by running the first statement once more when the pooled connection was dead."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, Engine, create_engine, delete, insert, select, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from models import Business
from syncguard.db import statement_connection


@pytest.fixture
def admin(database_url: str) -> Iterator[Engine]:
    """A superuser engine on this run's database (the service role may not end a backend)."""
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


def _backend_pid(connection: Connection) -> int:
    return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_connection_the_server_dropped_is_replaced_and_the_first_statement_rerun(
    admin: Engine,
) -> None:
    # Given a pooled connection whose server process has since been terminated (as after a
    # database restart or an idle-connection reaper)
    with statement_connection(_backend_pid) as (_, dead_pid):
        pass
    with admin.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": dead_pid}).scalar()
    calls: list[int] = []

    def first(connection: Connection) -> int:
        calls.append(1)
        return _backend_pid(connection)

    # When the next caller checks a connection out
    with statement_connection(first) as (connection, pid):
        # Then its first statement ran twice, the second time on a live connection
        assert (len(calls), pid != dead_pid) == (2, True)
        assert connection.execute(text("SELECT 1")).scalar_one() == 1


def test_each_statement_commits_on_its_own(engine: Engine) -> None:
    business = uuid.uuid4()
    row = insert(Business).values(id=business, name="Autocommit", slug=f"a-{business}")
    try:
        with statement_connection(lambda c: None) as (connection, _):
            connection.execute(row)
            # Seen from another connection while this one is still checked out: committed
            with engine.connect() as other:
                found = other.execute(select(Business.id).where(Business.id == business))
                assert found.scalar_one_or_none() == business
    finally:
        with engine.begin() as conn:
            conn.execute(delete(Business).where(Business.id == business))


def test_an_error_that_is_not_a_disconnect_is_raised_at_once(engine: Engine) -> None:
    calls: list[int] = []

    def first(connection: Connection) -> None:
        calls.append(1)
        connection.execute(text("SELECT no_such_column FROM pg_class"))

    with pytest.raises(ProgrammingError), statement_connection(first):
        pass
    assert len(calls) == 1


def test_a_second_disconnect_is_raised(admin: Engine) -> None:
    def first(connection: Connection) -> None:
        # Each attempt kills its own connection's server process, then uses it
        pid = _backend_pid(connection)
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        connection.execute(text("SELECT 1"))

    with pytest.raises(OperationalError), statement_connection(first):
        pass
