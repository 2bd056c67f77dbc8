"""Alembic environment: online migrations against the URL set by syncguard.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

import models
from migrations.partitions import include_name

config = context.config
target_metadata = models.Base.metadata


def run_migrations_online() -> None:
    """Run every pending migration in one transaction per revision."""
    url = config.get_main_option("sqlalchemy.url")
    assert url, "syncguard.migrate sets sqlalchemy.url"
    connectable = create_engine(url, poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            compare_type=True,
            compare_server_default=True,
            include_name=include_name,
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("syncguard migrates online only: set DATABASE_URL")
run_migrations_online()
