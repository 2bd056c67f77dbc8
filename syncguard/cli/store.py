"""``syncguard store``: add a mailbox, list them, connect one with its OAuth grant."""

from __future__ import annotations

import re
import uuid

import click
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import Business, Provider, Store, StoreStatus
from syncguard.cli.errors import describe
from syncguard.cli.support import database_session, fail_on_database_errors
from syncguard.cli.tables import render

__all__ = ["store"]

#: Why a store added but not yet connected is paused (no sync is attempted without credentials).
NOT_CONNECTED = "not connected yet: run `syncguard store connect`"
#: Enough of an address to catch typos; the provider is the authority on the rest.
_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_LIST_HEADERS = (
    "id",
    "business",
    "provider",
    "address",
    "status",
    "last sync",
    "cursor",
    "credentials",
)


@click.group()
def store() -> None:
    """Add, list and connect the stores' mailboxes."""


def find_business(session: Session, slug_or_id: str) -> Business | None:
    """The business with this id or slug, or None."""
    try:
        return session.get(Business, uuid.UUID(slug_or_id))
    except ValueError:
        return session.scalars(select(Business).where(Business.slug == slug_or_id)).one_or_none()


@store.command("add")
@click.option("--business", "business_ref", required=True, help="Business slug or id.")
@click.option(
    "--provider", required=True, type=click.Choice([p.value for p in Provider]), help="Provider."
)
@click.option("--address", required=True, help="Mailbox address (stored in lower case).")
@click.option("--name", help="Display name.")
@click.option("--create-business", metavar="NAME", help="Create the business (slug --business).")
def add(
    business_ref: str, provider: str, address: str, name: str | None, create_business: str | None
) -> None:
    """Add a store (paused until `store connect` gives it credentials)."""
    mailbox = address.strip().lower()
    if not _ADDRESS.match(mailbox):
        raise click.BadParameter(f"{address!r} is not an e-mail address", param_hint="--address")
    with database_session() as session:
        business = _business_for_add(session, business_ref, create_business)
        existing = session.scalars(
            select(Store).where(Store.provider == provider, Store.mailbox_address == mailbox)
        ).one_or_none()
        if existing is not None:
            raise click.ClickException(f"{provider} store {mailbox} already exists: {existing.id}")
        new = Store(
            business_id=business.id,
            provider=Provider(provider),
            mailbox_address=mailbox,
            display_name=name,
            status=StoreStatus.PAUSED,
            status_reason=NOT_CONNECTED,
        )
        session.add(new)
        try:
            session.flush()
        except IntegrityError as exc:  # added by someone else since the check above
            raise click.ClickException(f"{provider} store {mailbox} already exists") from exc
        store_id, slug = new.id, business.slug
    click.echo(f"store {store_id} added: {provider} {mailbox} of {slug} (paused until connected)")


def _business_for_add(session: Session, ref: str, create_name: str | None) -> Business:
    """The business ``ref`` names, created with ``create_name`` (and slug ``ref``) if asked."""
    business = find_business(session, ref)
    if business is not None:
        return business
    if create_name is None or _is_uuid(ref):
        hint = "" if create_name else " (--create-business NAME creates it, with slug --business)"
        raise click.ClickException(f"no business {ref}{hint}")
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,99}", ref):
        raise click.BadParameter(
            f"{ref!r} is not a slug (lower-case letters, digits, dashes)", param_hint="--business"
        )
    business = Business(name=create_name, slug=ref)
    session.add(business)
    session.flush()
    click.echo(f"business {business.id} created: {create_name} ({ref})")
    return business


def _is_uuid(text: str) -> bool:
    """Whether ``text`` is a UUID (an id, never a slug)."""
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


@store.command("list")
@click.option("--business", "business_ref", help="Only this business (slug or id).")
def list_command(business_ref: str | None) -> None:
    """List the stores: status, last sync, whether they hold a cursor and credentials."""
    with database_session() as session:
        statement = (
            select(Store, Business.slug)
            .join(Business, Business.id == Store.business_id)
            .order_by(Business.slug, Store.provider, Store.mailbox_address)
        )
        if business_ref is not None:
            business = find_business(session, business_ref)
            if business is None:
                raise click.ClickException(f"no business {business_ref}")
            statement = statement.where(Store.business_id == business.id)
        rows = [
            [
                s.id,
                slug,
                s.provider,
                s.mailbox_address,
                s.status,
                s.last_synced_at,
                s.sync_cursor is not None,
                s.credentials_encrypted is not None,
            ]
            for s, slug in session.execute(statement)
        ]
    click.echo(render(_LIST_HEADERS, rows) if rows else "no stores")


def _existing_store(_ctx: click.Context, _param: click.Parameter, store_id: uuid.UUID) -> uuid.UUID:
    """Check the store exists before anything is prompted for."""
    with database_session() as session:
        if session.get(Store, store_id) is None:
            raise click.ClickException(f"no store {store_id}")
    return store_id


@store.command()
@click.argument("store_id", type=click.UUID, is_eager=True, callback=_existing_store)
@click.option("--client-id", envvar="SYNCGUARD_OAUTH_CLIENT_ID", prompt=True, help="OAuth client.")
@click.option(
    "--client-secret",
    envvar="SYNCGUARD_OAUTH_CLIENT_SECRET",
    prompt=True,
    hide_input=True,
    help="Prefer the env var or the prompt: arguments end up in shell history.",
)
@click.option(
    "--refresh-token",
    envvar="SYNCGUARD_OAUTH_REFRESH_TOKEN",
    prompt=True,
    hide_input=True,
    help="Prefer the env var or the prompt: arguments end up in shell history.",
)
@click.option(
    "--tenant-id",
    default=None,
    help="Outlook: the mailbox's Microsoft Entra tenant id; its Graph app quota is per tenant.",
)
@click.option("--subscribe", is_flag=True, help="Then open the Gmail watch / Graph subscription.")
@click.option("--sync", "first_sync", is_flag=True, help="Then request a first sync.")
def connect(
    store_id: uuid.UUID,
    client_id: str,
    client_secret: str,
    refresh_token: str,
    tenant_id: str | None,
    subscribe: bool,
    first_sync: bool,
) -> None:
    """Save STORE_ID's OAuth grant encrypted and make the store active."""
    from providers.oauth import OAuthCredentials
    from tasks.provider_clients import save_credentials  # lazy: the Celery side

    tenant = tenant_id.strip() if tenant_id else None
    credentials = OAuthCredentials(
        client_id.strip(), client_secret.strip(), refresh_token.strip(), tenant_id=tenant
    )
    with fail_on_database_errors():
        save_credentials(store_id, credentials)
    with database_session() as session:
        address = session.execute(
            update(Store)
            .where(Store.id == store_id)
            .values(status=StoreStatus.ACTIVE, status_reason=None)
            .returning(Store.mailbox_address)
        ).scalar_one()
    click.echo(f"credentials saved encrypted for store {store_id} ({address}); store active")
    if subscribe:
        _enqueue_subscription(store_id)
    if first_sync:
        _request_first_sync(store_id)


def _enqueue_subscription(store_id: uuid.UUID) -> None:
    """Enqueue the store's watch or subscription; a broker error is one line."""
    from tasks.webhooks import create_subscription

    try:
        result = create_subscription.delay(str(store_id))
    except Exception as exc:  # kombu's connection errors have no common public base
        raise click.ClickException(f"could not enqueue the subscription: {describe(exc)}") from exc
    click.echo(f"subscription task {result.id} queued")


def _request_first_sync(store_id: uuid.UUID) -> None:
    """Request the store's first sync; a broker or database error is one line."""
    from tasks.sync.requests import request_sync

    try:
        job_id = request_sync(store_id)
    except Exception as exc:  # the broker or the database
        raise click.ClickException(f"could not request a sync: {describe(exc)}") from exc
    click.echo(f"sync job {job_id} queued" if job_id else "folded into the pending sync")
