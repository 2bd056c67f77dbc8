"""``syncguard up``: the whole stack in the foreground, the one command that starts servers."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from syncguard.cli.credentials import (
    FLOWER_PASSWORD_FILE,
    FLOWER_USER,
    FlowerLoginMissing,
    development_operator_key,
    flower_basic_auth,
)
from syncguard.cli.stack import Child, Stack
from syncguard.cli.support import (
    api_base_url,
    emulator_base_url,
    migrate_or_fail,
    public_base_url,
    require_production_keys,
)
from syncguard.crypto import EncryptionConfigError
from syncguard.services import ServicesError, ServiceURLs, ensure_services, home_dir, stop_embedded
from syncguard.settings import Settings, get_settings
from tasks.queues import QUEUE_NAMES

__all__ = ["child_env", "stack_children", "up"]

_CELERY = (sys.executable, "-m", "celery", "-A", "tasks")
#: Celery without its start-up banners (``-q``), for the quiet default.
_CELERY_QUIET = (*_CELERY, "-q")
#: This CLI as a child process (``python -m syncguard.cli``), whatever the console script's path.
_SYNCGUARD = (sys.executable, "-m", "syncguard.cli")


@click.command()
@click.option("--beat/--no-beat", default=True, show_default=True, help="Run Celery Beat.")
@click.option("--flower/--no-flower", default=True, show_default=True, help="Run Flower.")
@click.option(
    "--demo/--no-demo",
    default=None,
    help="Run the provider emulator and the demo stores, and point the adapters at it "
    "[default: on unless SYNCGUARD_ENVIRONMENT=production].",
)
def up(beat: bool, flower: bool, demo: bool | None) -> None:
    """Run the whole stack in the foreground until Ctrl-C: services, migrations, processes.

    The only command that starts the embedded PostgreSQL and Redis (and stops them on exit).
    """
    settings = get_settings()
    if demo is None:
        demo = settings.environment != "production"
    verbose = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    try:
        require_production_keys(settings)
        flower_login = flower_basic_auth(settings) if flower else ""
        urls = ensure_services(settings, start=True)
    except (EncryptionConfigError, FlowerLoginMissing, ServicesError) as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        migrate_or_fail(urls.database_url, "head")
        emulator_url = emulator_base_url(settings) if demo else None
        _banner(settings, flower=flower, demo=demo)
        children = stack_children(
            settings,
            beat=beat,
            flower=flower,
            demo=demo,
            flower_login=flower_login,
            verbose=verbose,
        )
        code = Stack(children, child_env(settings, urls, emulator_url)).run()
    finally:
        # Only what this command started: servers someone else runs stay up.
        for name in stop_embedded(settings, urls.started):
            click.echo(f"stopped embedded {name}")
    if code != 0:
        raise click.ClickException("a process of the stack exited unexpectedly (see the log above)")


def _banner(settings: Settings, *, flower: bool, demo: bool) -> None:
    """Every URL a person opens, and in development how to log in to each."""
    api = api_base_url(settings)
    home = _shown_path(home_dir(settings))
    login = ""
    if settings.environment != "production":
        key_file = _shown_path(development_operator_key(settings))
        login = f"  log in with the operator key: cat {key_file}"
    lines = [
        f"Dashboard:  {api}/dashboard{login}",
        f"API docs:   {api}/docs  (JSON API /api/v1, webhooks /webhooks/, health /healthz)",
        f"Prometheus: {api}/metrics",
    ]
    if public_base_url(settings) != api:
        lines.append(f"  providers are told to notify {public_base_url(settings)}/webhooks/…")
    if flower:
        password = (
            f"  user {FLOWER_USER}, password: cat {home}/{FLOWER_PASSWORD_FILE}"
            if not settings.flower_basic_auth.get_secret_value()
            else "  login: SYNCGUARD_FLOWER_BASIC_AUTH"
        )
        lines.append(f"Flower:     http://127.0.0.1:{settings.flower_port}/{password}")
    if demo:
        lines.append(
            f"Emulator:   {emulator_base_url(settings)}/  (Gmail and Graph calls go there)"
        )
        lines.append(
            "Demo: 4 stores seeded there; a new message every 15 s, synced on the provider's "
            "notification (--no-demo: off)"
        )
    lines.append(
        'Shell: eval "$(.venv/bin/syncguard env)" sets DATABASE_URL/REDIS_URL; '
        ".venv/bin/syncguard psql opens the database"
    )
    click.echo("\n".join(lines))


def _shown_path(path: Path) -> str:
    # Relative to where the user stands when it is below it: shorter, and copy-pasteable.
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def stack_children(
    settings: Settings,
    *,
    beat: bool = True,
    flower: bool = True,
    demo: bool = False,
    flower_login: str = "",
    verbose: bool = False,
) -> list[Child]:
    """The stack's long-running processes in start order; each area adds its own line.

    Quiet unless ``verbose``: Celery's worker and Beat log at WARNING without their banners (a
    line per task run, and the safeguard mirror runs every 5 s, would drown the demo's story),
    Flower at WARNING, the emulator without its access log.
    """
    celery = _CELERY if verbose else _CELERY_QUIET
    level = "info" if verbose else "warning"
    children = [_worker(celery, settings, level)]
    if beat:
        children.append(_beat(celery, settings, level))
    if flower:
        children.append(_flower(settings, flower_login, level))
    children.append(_api(settings, verbose))
    if demo:
        children += _demo(settings, verbose)
    return children


def _worker(celery: tuple[str, ...], settings: Settings, level: str) -> Child:
    queues = ",".join(QUEUE_NAMES)
    concurrency = str(settings.worker_concurrency)
    return Child("worker", [*celery, "worker", "-l", level, "-Q", queues, "-c", concurrency])


def _beat(celery: tuple[str, ...], settings: Settings, level: str) -> Child:
    schedule = home_dir(settings) / "celerybeat-schedule"
    return Child("beat", [*celery, "beat", "-l", level, "-s", str(schedule)])


def _flower(settings: Settings, login: str, level: str) -> Child:
    argv = [*_CELERY, "flower", f"--port={settings.flower_port}", "--address=127.0.0.1"]
    # Flower reads its options from FLOWER_* variables: the password stays out of argv (`ps`).
    env = {"FLOWER_BASIC_AUTH": login} if login else {}
    return Child("flower", [*argv, f"--logging={level}"], env)


def _syncguard(verbose: bool) -> tuple[str, ...]:
    return (*_SYNCGUARD, "-v") if verbose else _SYNCGUARD


def _api(settings: Settings, verbose: bool = False) -> Child:
    # `syncguard api`: uvicorn with the scrubbing log configuration (as docker-compose runs it).
    port = str(settings.api_port)
    return Child("api", [*_syncguard(verbose), "api", "--host", "127.0.0.1", "--port", port])


def _demo(settings: Settings, verbose: bool = False) -> list[Child]:
    # The demo child waits for the emulator to answer, then seeds; once the API answers and the
    # first syncs are done it subscribes the healthy stores, then keeps adding messages.
    port = str(settings.emulator_port)
    url = emulator_base_url(settings)
    api = api_base_url(settings)
    cli = _syncguard(verbose)
    return [
        Child(
            "emulator",
            [*cli, "emulator", "--host", "127.0.0.1", "--port", port]
            + ([] if verbose else ["--no-access-log"]),
        ),
        Child("demo", [*cli, "demo", "--emulator-url", url, "--api-url", api, "--follow"]),
    ]


def child_env(
    settings: Settings, urls: ServiceURLs, emulator_url: str | None = None
) -> dict[str, str]:
    """Every child's environment: the resolved URLs (no child starts a server) and the demo's."""
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
