"""One place where every command's known failures become one ``Error:`` line and exit code 1.

A command may still raise ``click.ClickException`` itself for a clearer message; whatever it
does not catch of the project's known error types (configuration, services, database, Redis,
broker, encryption keys) is turned into one line here, at the group, not in each command.
``--verbose`` logs the traceback too.
"""

from __future__ import annotations

import logging
from typing import Any

import click
import kombu.exceptions
import psycopg
import pydantic
import redis
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from safeguards.errors import SafeguardError
from syncguard.crypto import DecryptionError, EncryptionConfigError
from syncguard.services import ServicesError

__all__ = ["KNOWN_ERRORS", "SyncguardGroup", "describe"]

log = logging.getLogger("syncguard")

#: What a command may fail with that deserves one line rather than a traceback.
KNOWN_ERRORS: tuple[type[BaseException], ...] = (
    ServicesError,
    EncryptionConfigError,
    DecryptionError,
    pydantic.ValidationError,
    SQLAlchemyError,
    psycopg.Error,
    redis.RedisError,
    kombu.exceptions.OperationalError,
    SafeguardError,
)


class SyncguardGroup(click.Group):
    """A click group whose commands' known errors (``KNOWN_ERRORS``) end in one ``Error:`` line."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; a known error becomes a ``click.ClickException`` (exit code 1)."""
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            if exc.__cause__ is not None:  # a command's own one-liner for a caught error
                log.debug("the command failed", exc_info=exc.__cause__)  # shown with --verbose
            raise
        except KNOWN_ERRORS as exc:
            log.debug("the command failed", exc_info=True)
            raise click.ClickException(describe(exc)) from exc


def describe(exc: BaseException) -> str:
    """One line saying what went wrong: no traceback, bound SQL value or setting's value."""
    if isinstance(exc, pydantic.ValidationError):
        return "invalid configuration: " + "; ".join(
            f"{_variable(error['loc'])}: {error['msg']}" for error in exc.errors()
        )
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        # The driver's own message, without SQLAlchemy's statement and parameters.
        return f"database error: {_first_line(exc.orig)}"
    if isinstance(exc, SQLAlchemyError | psycopg.Error):
        return f"database error: {_first_line(exc)}"
    if isinstance(exc, redis.RedisError):
        return f"Redis error: {_first_line(exc)}"
    if isinstance(exc, kombu.exceptions.OperationalError):
        return f"broker error: {_first_line(exc)}"
    return _first_line(exc)


def _variable(loc: tuple[int | str, ...]) -> str:
    # Settings' fields are read from SYNCGUARD_<FIELD>; the service URLs keep their own names.
    name = str(loc[0]) if loc else "?"
    return name if name.isupper() else f"SYNCGUARD_{name.upper()}"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
