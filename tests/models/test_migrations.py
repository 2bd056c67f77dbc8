"""One Alembic history that matches the models exactly, up and down."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, make_url, text

import models
from migrations.partitions import include_name
from syncguard.migrate import downgrade, upgrade


@pytest.fixture
def scratch_url(server_url: str) -> Iterator[str]:
    """An empty database of its own, dropped afterwards."""
    name = f"syncguard_scratch_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def _drift(url: str) -> list[object]:
    engine = create_engine(url)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                "include_name": include_name,
            },
        )
        diff = compare_metadata(context, models.Base.metadata)
    engine.dispose()
    return list(diff)


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    names = set(inspect(engine).get_table_names())
    engine.dispose()
    return names


def test_upgrade_downgrade_upgrade_round_trip(scratch_url: str) -> None:
    upgrade(scratch_url)
    assert set(models.Base.metadata.tables) <= _tables(scratch_url)

    downgrade(scratch_url, "base")
    assert _tables(scratch_url) <= {"alembic_version"}

    upgrade(scratch_url)
    assert set(models.Base.metadata.tables) <= _tables(scratch_url)


def test_autogenerate_finds_no_drift(database_url: str) -> None:
    assert _drift(database_url) == []


def test_drift_check_can_fail(scratch_url: str) -> None:
    """The comparison is live: a column missing from the database is reported."""
    upgrade(scratch_url)
    engine = create_engine(scratch_url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE stores DROP COLUMN display_name"))
    engine.dispose()
    assert any("display_name" in repr(d) for d in _drift(scratch_url))


def test_every_table_has_forced_row_level_security(database_url: str) -> None:
    engine = create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
                "WHERE relname = ANY(:names)"
            ),
            {"names": list(models.Base.metadata.tables)},
        ).all()
    engine.dispose()
    assert {r.relname for r in rows} == set(models.Base.metadata.tables)
    assert [r.relname for r in rows if not (r.relrowsecurity and r.relforcerowsecurity)] == []
