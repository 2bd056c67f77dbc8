"""Alembic, driven from code: the CLI, the tests and ``syncguard up`` all migrate through here."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations

#: The Alembic script directory, shipped as a package so an installed syncguard can migrate.
SCRIPT_LOCATION = Path(migrations.__file__).resolve().parent


def alembic_config(database_url: str) -> Config:
    """An Alembic config for ``database_url`` without any alembic.ini on disk."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    # ConfigParser interpolation would eat a '%' in a password.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate the database at ``database_url`` up to ``revision``."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    """Migrate the database at ``database_url`` down to ``revision``."""
    command.downgrade(alembic_config(database_url), revision)
