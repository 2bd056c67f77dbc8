"""``syncguard audit``: are all accepted jobs terminal or live, and (with ``--emulator``) does
every local copy match its mailbox? Prints the counts; exits 1 on any violation."""

from __future__ import annotations

import uuid

import click
import httpx
from sqlalchemy import select

from models import Provider, Store
from providers.emulator.state import SYSTEM_LABELS
from syncguard.cli.support import running_services
from syncguard.cli.tables import render
from syncguard.db import service_session
from syncguard.settings import get_settings
from tasks.audit import Audit, audit_jobs, audit_mailboxes

#: How many violations are listed (all are counted).
MAX_LISTED = 50


@click.command()
@click.option("--store", "stores", multiple=True, type=click.UUID, help="Only this store (repeat).")
@click.option(
    "--emulator",
    metavar="URL",
    help="Also compare each store's local copy with its mailbox in the provider emulator.",
)
def audit(stores: tuple[uuid.UUID, ...], emulator: str | None) -> None:
    """Check that no job is lost or stuck (and, with --emulator, no message)."""
    running_services(get_settings())
    result = run_audit(list(stores) or None, emulator)
    click.echo(render(["count", "value"], sorted(result.counts.items())))
    if result.ok:
        click.echo("audit: ok")
        return
    listed = [(v.kind, v.subject, v.detail) for v in result.violations[:MAX_LISTED]]
    click.echo(render(["violation", "subject", "detail"], listed))
    raise click.ClickException(f"audit: {len(result.violations)} violation(s)")


def run_audit(stores: list[uuid.UUID] | None, emulator_url: str | None) -> Audit:
    """The job audit, plus the mailbox audit against ``emulator_url`` when given."""
    result = audit_jobs(stores)
    if emulator_url is not None:
        result = result.merge(audit_mailboxes(emulator_truth(emulator_url, stores)))
    return result


def emulator_truth(
    url: str, stores: list[uuid.UUID] | None
) -> dict[uuid.UUID, dict[str, set[str]]]:
    """{store id: {message id: labels as the local copy holds them}} for every store whose
    mailbox the emulator knows (others are skipped). Raises httpx.HTTPError if it cannot
    be reached."""
    stmt = select(Store.id, Store.provider, Store.mailbox_address)
    if stores is not None:
        stmt = stmt.where(Store.id.in_(stores))
    with service_session() as session:
        rows = session.execute(stmt).all()
    truth: dict[uuid.UUID, dict[str, set[str]]] = {}
    with httpx.Client(base_url=url, timeout=10.0) as http:
        for store_id, provider, address in rows:
            response = http.get(f"/_emulator/mailboxes/{address}")
            if response.status_code == 404:
                continue
            response.raise_for_status()
            truth[store_id] = {
                m["id"]: local_labels(provider, m["labels"])
                for m in response.json()["messages"]
                if not {"SPAM", "TRASH"} & set(m["labels"])  # not copied (tasks/sync)
            }
    return truth


def local_labels(provider: Provider, labels: list[str]) -> set[str]:
    """A mailbox message's labels as the copy holds them: Gmail's all, Graph's categories
    plus UNREAD (Graph has no system labels but the read flag)."""
    if provider is Provider.GMAIL:
        return set(labels)
    kept = {label for label in labels if label not in SYSTEM_LABELS}
    return kept | ({"UNREAD"} if "UNREAD" in labels else set())
