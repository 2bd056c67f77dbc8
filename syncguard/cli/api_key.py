"""``syncguard api-key``: mint, list and revoke the keys of the JSON API and the dashboard."""

from __future__ import annotations

import uuid

import click
from sqlalchemy import select

from models import ApiKey, Business
from syncguard.cli.store import find_business
from syncguard.cli.support import database_session, fail_on_database_errors
from syncguard.cli.tables import render

__all__ = ["api_key"]

_LIST_HEADERS = ("id", "name", "role", "business", "prefix", "created", "last used", "revoked")


@click.group("api-key")
def api_key() -> None:
    """Mint, list and revoke API keys (a key opens the JSON API and the dashboard)."""


@api_key.command("create")
@click.argument("name")
@click.option(
    "--business",
    "--business-id",
    "business_ref",
    help="The business (slug or id) the key is scoped to; none: an operator key (every business).",
)
def create(name: str, business_ref: str | None) -> None:
    """Mint a key called NAME (who holds it) and print it once."""
    from api.api_keys import create_key  # lazy: the API package is only needed here

    if not name.strip():
        raise click.BadParameter("an API key needs a name (who holds it)", param_hint="NAME")
    business_id = None
    if business_ref is not None:
        with database_session() as session:
            business = find_business(session, business_ref)
            if business is None:
                raise click.ClickException(f"no business {business_ref}")
            business_id = business.id
    with fail_on_database_errors():
        key_id, plaintext = create_key(business_id, name)
    scope = f"business {business_ref}" if business_ref else "operator: every business"
    click.echo(f"key {key_id} created ({scope})")
    click.echo(plaintext)
    click.echo("shown once: store it now (the database keeps only its SHA-256)", err=True)


@api_key.command("list")
@click.option("--all", "show_all", is_flag=True, help="Revoked keys too.")
def list_command(show_all: bool) -> None:
    """List the keys: who holds them, their scope, when last used (never the key itself)."""
    with database_session() as session:
        statement = (
            select(ApiKey, Business.slug)
            .outerjoin(Business, Business.id == ApiKey.business_id)
            .order_by(ApiKey.created_at)
        )
        if not show_all:
            statement = statement.where(ApiKey.revoked_at.is_(None))
        rows = [
            [k.id, k.name, k.role, slug, k.key_prefix, k.created_at, k.last_used_at, k.revoked_at]
            for k, slug in session.execute(statement).all()
        ]
    click.echo(render(_LIST_HEADERS, rows))


@api_key.command("revoke")
@click.argument("key_id", type=click.UUID)
def revoke(key_id: uuid.UUID) -> None:
    """Revoke key KEY_ID and end its dashboard sessions."""
    from api.api_keys import revoke_key  # lazy: the API package is only needed here

    with fail_on_database_errors():
        revoked = revoke_key(key_id)
    if not revoked:
        raise click.ClickException(f"no unrevoked key {key_id}")
    click.echo(f"key {key_id} revoked")
