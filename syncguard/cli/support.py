"""What the operations commands share: a database session that fails in one line, ISO times."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from syncguard.db import service_session
from syncguard.services import ServicesError, ensure_services
from syncguard.settings import get_settings

__all__ = ["IsoDateTime", "database_session", "fail_on_database_errors"]


@contextmanager
def fail_on_database_errors() -> Iterator[None]:
    """Turn an unreachable or failing database into one clear error line and exit code 1."""
    try:
        ensure_services(get_settings())
        yield
    except ServicesError as exc:
        raise click.ClickException(str(exc)) from exc
    except SQLAlchemyError as exc:
        raise click.ClickException(f"database error: {exc}") from exc


@contextmanager
def database_session() -> Iterator[Session]:
    """One committed service-role transaction, its database errors as a click error."""
    with fail_on_database_errors(), service_session() as session:
        yield session


class IsoDateTime(click.ParamType[datetime]):
    """An ISO 8601 date or date-time; one without a zone is taken as UTC."""

    name = "ISO-8601"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        """The parsed, time-zone-aware datetime."""
        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 date or date-time", param, ctx)
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
