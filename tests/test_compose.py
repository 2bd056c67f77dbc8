"""docker-compose.yml names only commands that exist in this project."""

from __future__ import annotations

import importlib
import importlib.metadata
import shlex
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from celery import Celery
from fastapi import FastAPI

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
#: Services built from our image, as opposed to stock images.
APP_SERVICES = ["migrate", "worker", "beat", "flower", "api"]
CELERY_SUBCOMMANDS = {"worker", "beat", "flower"}


def _argv(service: dict[str, Any]) -> list[str]:
    parts: list[str] = []
    for key in ("entrypoint", "command"):
        value = service.get(key)
        parts += shlex.split(value) if isinstance(value, str) else list(value or [])
    return parts


def _console_script(name: str) -> click.Group:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, attr = scripts[name].partition(":")
    group = getattr(importlib.import_module(module), attr)
    assert isinstance(group, click.Group)
    return group


def _check_celery(argv: list[str]) -> None:
    app_module = argv[argv.index("-A") + 1]
    app = importlib.import_module(app_module).app
    assert isinstance(app, Celery)
    sub = next(arg for arg in argv[1:] if not arg.startswith("-") and arg != app_module)
    assert sub in CELERY_SUBCOMMANDS


def _check_uvicorn(argv: list[str]) -> None:
    # The `uvicorn` command comes with an installed distribution, and its target is our ASGI app.
    assert importlib.metadata.entry_points(group="console_scripts", name="uvicorn")
    target = next(arg for arg in argv[1:] if not arg.startswith("-"))
    module, _, attr = target.partition(":")
    assert isinstance(getattr(importlib.import_module(module), attr or "app"), FastAPI)


def test_the_expected_services_exist() -> None:
    assert {"postgres", "redis", *APP_SERVICES} <= SERVICES.keys()


def test_stock_services_keep_their_data() -> None:
    assert "healthcheck" in SERVICES["postgres"]
    assert SERVICES["postgres"]["volumes"] and SERVICES["redis"]["volumes"]
    assert "--appendonly" in _argv(SERVICES["redis"])


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_runs_an_existing_entry_point(name: str) -> None:
    argv = _argv(SERVICES[name])
    if argv[0] == "celery":
        _check_celery(argv)
    elif argv[0] == "uvicorn":
        _check_uvicorn(argv)
    else:
        group = _console_script(argv[0])
        assert argv[1] in group.commands, f"{name}: `{argv[0]} {argv[1]}` is no such command"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_is_built_from_our_dockerfile_for_production(name: str) -> None:
    service = SERVICES[name]
    build = service["build"]
    assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")).is_file()
    env = service["environment"]
    assert env["SYNCGUARD_ENVIRONMENT"] == "production"
    assert "@postgres:" in env["DATABASE_URL"] and "//redis:" in env["REDIS_URL"]


def test_migrate_runs_once_and_the_rest_wait_for_it() -> None:
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("worker", "beat", "flower", "api"):
        condition = SERVICES[name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully"


def test_the_api_is_published_and_checked_on_healthz() -> None:
    api = SERVICES["api"]
    assert any(str(port).endswith(":8000") for port in api["ports"])
    assert "/healthz" in " ".join(api["healthcheck"]["test"])
    assert "SYNCGUARD_PUBLIC_BASE_URL" in api["environment"]


def test_the_image_ships_every_package_it_installs() -> None:
    # `pip install .` in the Dockerfile needs every package pyproject.toml lists.
    dockerfile = (ROOT / "Dockerfile").read_text()
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for top in {name.split(".")[0] for name in packages["packages"]}:
        assert f"COPY {top}/ {top}/" in dockerfile, f"the image lacks {top}/"


def test_flower_requires_its_login_from_the_setting() -> None:
    # Flower's HTTP API answers 401 without authentication configured; compose refuses to
    # start until SYNCGUARD_FLOWER_BASIC_AUTH is set, and hands it to Flower only.
    flower = SERVICES["flower"]["environment"]
    assert flower["FLOWER_BASIC_AUTH"].startswith("${SYNCGUARD_FLOWER_BASIC_AUTH:?")
    assert flower["SYNCGUARD_ENVIRONMENT"] == "production"  # the shared variables are kept
    assert "FLOWER_BASIC_AUTH" not in SERVICES["worker"]["environment"]
