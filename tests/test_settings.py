"""Settings: the PostgreSQL URLs hosting providers hand out are accepted as they are."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from syncguard.settings import Settings, sqlalchemy_database_url


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db:5432/app", "postgresql+psycopg://u:p@db:5432/app"),
        ("postgresql://u@db/app?sslmode=require", "postgresql+psycopg://u@db/app?sslmode=require"),
        ("postgresql+psycopg2://u@db/app", "postgresql+psycopg://u@db/app"),
        ("postgresql+psycopg://u@db/app", "postgresql+psycopg://u@db/app"),
    ],
)
def test_postgres_urls_become_the_psycopg_dialect(given: str, expected: str) -> None:
    assert sqlalchemy_database_url(given) == expected


def test_a_postgres_url_from_the_environment_connects(
    monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    # Given the URL as a hosting provider writes it (no driver in the scheme)
    bare = "postgres://" + database_url.split("://", 1)[1]
    monkeypatch.setenv("DATABASE_URL", bare)
    # When the settings read it, then SQLAlchemy loads a dialect for it and reaches the server
    url = Settings().database_url
    assert url is not None
    with create_engine(url).connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
