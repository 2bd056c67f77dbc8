"""What the commands share: the running stack's services and database in one failing line,
where ``up`` serves things, migrations, ISO times."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from syncguard.cli.errors import describe
from syncguard.crypto import cipher_from_settings
from syncguard.db import service_session
from syncguard.services import ServicesError, ServiceURLs, ensure_services
from syncguard.settings import Settings, get_settings

__all__ = [
    "IsoDateTime",
    "api_base_url",
    "database_session",
    "emulator_base_url",
    "fail_on_database_errors",
    "migrate_or_fail",
    "public_base_url",
    "require_production_keys",
    "running_services",
]


def running_services(settings: Settings) -> ServiceURLs:
    """The configured or running embedded services (never started here); else one error line."""
    try:
        return ensure_services(settings)
    except ServicesError as exc:
        raise click.ClickException(str(exc)) from exc


def require_production_keys(settings: Settings) -> None:
    """In production, EncryptionConfigError unless SYNCGUARD_ENCRYPTION_KEYS holds valid keys.

    Called before a server starts, so a production process refuses to start without them
    rather than fail at the first credential it stores or reads.
    """
    if settings.environment == "production":
        cipher_from_settings(settings)


def migrate_or_fail(database_url: str, revision: str) -> None:
    """Migrate the database to ``revision``; a failure is one error line, not a traceback."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # Alembic narrates its plugin set-up (on import) and each step at INFO: -v shows them.
        logging.getLogger("alembic").setLevel(logging.WARNING)
    from syncguard.migrate import upgrade  # lazy: Alembic is only needed by these commands

    try:
        upgrade(database_url, revision)
    except Exception as exc:
        # Alembic's errors (unknown revision, failed DDL) deserve one clear line.
        raise click.ClickException(f"migration to {revision} failed: {describe(exc)}") from exc


def emulator_base_url(settings: Settings) -> str:
    """Where ``up`` runs the emulator: its base URL."""
    return f"http://127.0.0.1:{settings.emulator_port}"


def api_base_url(settings: Settings) -> str:
    """Where ``up`` runs the API: its base URL."""
    return f"http://127.0.0.1:{settings.api_port}"


def public_base_url(settings: Settings) -> str:
    """The API's URL as providers see it: ``SYNCGUARD_PUBLIC_BASE_URL`` if set, else ``up``'s."""
    if "public_base_url" in settings.model_fields_set:
        return settings.public_base_url.rstrip("/")
    return api_base_url(settings)


@contextmanager
def fail_on_database_errors() -> Iterator[None]:
    """Turn an unreachable or failing database into one clear error line and exit code 1."""
    try:
        ensure_services(get_settings())
        yield
    except ServicesError as exc:
        raise click.ClickException(str(exc)) from exc
    except SQLAlchemyError as exc:
        raise click.ClickException(describe(exc)) from exc


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
