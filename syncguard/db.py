"""Engines and sessions: the service role for the system's own work, the tenant role for tenants."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from syncguard.settings import Settings, get_settings

T = TypeVar("T")

#: The per-transaction setting tenant policies compare ``business_id`` with.
TENANT_SETTING = "syncguard.business_id"


def database_url(settings: Settings | None = None) -> str:
    """The PostgreSQL URL in use: the configured one, or the embedded server's."""
    from syncguard.services import ensure_services  # lazy: starts a server only when needed

    return ensure_services(settings or get_settings()).database_url


#: SQLSTATE of a foreign-key violation (also raised by the trigger that fills ``business_id``).
FOREIGN_KEY_VIOLATION = "23503"


def is_foreign_key_violation(exc: BaseException) -> bool:
    """True for a database error saying a referenced row (a store, a business) does not exist."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None) == FOREIGN_KEY_VIOLATION


#: One pooled engine per (url, role) per process; a forked child must call dispose_engines().
_engines: dict[tuple[str, str], Engine] = {}


def get_engine(url: str | None = None, role: str | None = None) -> Engine:
    """A pooled engine whose connections act as ``role`` (default: the service role)."""
    settings = get_settings()
    key = (url or database_url(settings), settings.db_service_role if role is None else role)
    if key not in _engines:
        _engines[key] = _create_engine(*key)
    return _engines[key]


def _create_engine(url: str, role: str, **options: Any) -> Engine:
    # hide_parameters: an error's text (logged, archived with its traceback) never carries the
    # bound values, which can be a key prefix, a token hash or a message's content.
    engine = create_engine(url, **{"pool_pre_ping": True, "hide_parameters": True, **options})
    if role:

        @event.listens_for(engine, "connect")
        def _assume_role(dbapi_connection: Any, _record: Any) -> None:
            # A superuser bypasses RLS even when forced; acting as the service role keeps us
            # under the same policies production runs with.
            with dbapi_connection.cursor() as cursor:
                cursor.execute(f'SET ROLE "{role}"')
            dbapi_connection.commit()

    return engine


#: One autocommit engine per (url, role) per process (see statement_connection).
_statement_engines: dict[tuple[str, str], Engine] = {}


@contextmanager
def statement_connection(first: Callable[[Connection], T]) -> Iterator[tuple[Connection, T]]:
    """A service-role connection in autocommit, and ``first``'s result on it.

    For a hot path whose writes fit one statement: every statement is its own transaction,
    committed when it returns, so there is no BEGIN or COMMIT round trip. Its pool does not
    ping at checkout either (one more round trip each time): ``first``, which must be safe to
    run twice (a read), runs once more on a fresh connection when its pooled one was found dead
    (the database restarted since; SQLAlchemy then discards the pool's older connections too).
    Raises SQLAlchemy's errors otherwise, and a second failure.
    """
    settings = get_settings()
    key = (database_url(settings), settings.db_service_role)
    if key not in _statement_engines:
        _statement_engines[key] = _create_engine(
            *key, pool_pre_ping=False, isolation_level="AUTOCOMMIT"
        )
    engine = _statement_engines[key]
    connection = engine.connect()
    try:
        result = first(connection)
    except DBAPIError as exc:
        connection.close()
        if not exc.connection_invalidated:
            raise
        connection = engine.connect()
        try:
            result = first(connection)
        except BaseException:
            connection.close()
            raise
    except BaseException:
        connection.close()
        raise
    with connection:
        yield connection, result


@lru_cache(maxsize=4)
def _sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def session_factory(engine: Engine | None = None) -> sessionmaker[Session]:
    """The session factory bound to ``engine`` (default: the service engine)."""
    return _sessionmaker(engine or get_engine())


@contextmanager
def service_session(engine: Engine | None = None) -> Iterator[Session]:
    """One transaction with full access, committed on success and rolled back on error."""
    with session_factory(engine).begin() as session:
        yield session


@contextmanager
def session_or_new(session: Session | None) -> Iterator[Session]:
    """The caller's session (the caller commits), or a committed service_session() of our own."""
    if session is not None:
        yield session
    else:
        with service_session() as own:
            yield own


@contextmanager
def tenant_session(business_id: uuid.UUID, engine: Engine | None = None) -> Iterator[Session]:
    """One read-only transaction that sees only ``business_id``'s rows, enforced by RLS."""
    with session_factory(engine).begin() as session:
        session.execute(text(f'SET LOCAL ROLE "{get_settings().db_tenant_role}"'))
        session.execute(
            text("SELECT set_config(:name, :value, true)"),
            {"name": TENANT_SETTING, "value": str(business_id)},
        )
        yield session


def dispose_engines() -> None:
    """Forget pooled connections inherited from a parent process (call after fork)."""
    for engine in (*_engines.values(), *_statement_engines.values()):
        engine.dispose(close=False)
    _engines.clear()
    _statement_engines.clear()
    _sessionmaker.cache_clear()
