"""``syncguard dlq``: list, show, review, replay and discard dead-letter archive entries."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from models import FailureCategory, ReviewResolution
from safeguards.dead_letter.archive import (
    ArchivedJob,
    ArchiveFilter,
    ReplayResult,
    discard,
    get_entry,
    list_entries,
    replay,
    replay_many,
    review,
)
from safeguards.errors import DeadLetterError
from syncguard.cli.errors import describe
from syncguard.cli.support import IsoDateTime, fail_on_database_errors
from syncguard.cli.tables import cell, render

__all__ = ["dlq"]

_LIST_HEADERS = (
    "id",
    "archived at",
    "category",
    "job type",
    "retries",
    "reviewed",
    "resolution",
    "replays",
    "reason",
)

#: The ArchivedJob fields the list shows, in the order of its headers.
_LIST_FIELDS = (
    *("id", "created_at", "failure_category", "job_type", "retry_count", "reviewed"),
    *("resolution", "replay_count", "failure_reason"),
)


def _filter_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The archive filter's options, shared by ``list`` and ``replay --all``."""
    options = [
        click.option(
            "--category", type=click.Choice([c.value for c in FailureCategory]), help="Category."
        ),
        click.option("--store", "store_id", type=click.UUID, help="Only this store."),
        click.option("--business", "business_id", type=click.UUID, help="Only this business."),
        click.option("--job-type", help="Task name, e.g. tasks.sync.sync_store."),
        click.option("--since", type=IsoDateTime(), help="Archived at or after (UTC if no zone)."),
        click.option("--until", type=IsoDateTime(), help="Archived before (UTC if no zone)."),
        click.option("--reviewed/--unreviewed", default=None, help="Review state [default: any]."),
        click.option(
            "--limit", type=click.IntRange(min=1), default=100, show_default=True, help="Entries."
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _archive_filter(
    category: str | None,
    store_id: uuid.UUID | None,
    business_id: uuid.UUID | None,
    job_type: str | None,
    since: datetime | None,
    until: datetime | None,
    reviewed: bool | None,
    limit: int,
) -> ArchiveFilter:
    """The ArchiveFilter the filter options describe."""
    return ArchiveFilter(
        category=None if category is None else FailureCategory(category),
        store_id=store_id,
        business_id=business_id,
        since=since,
        until=until,
        reviewed=reviewed,
        job_type=job_type,
        limit=limit,
    )


@contextmanager
def _archive_errors() -> Iterator[None]:
    """Unknown entries and refused replays as one clear line and exit code 1."""
    with fail_on_database_errors():
        try:
            yield
        except DeadLetterError as exc:
            # The safeguard speaks Python (``force=True``); an operator types ``--force``.
            raise click.ClickException(str(exc).replace("force=True", "--force")) from exc


@click.group()
def dlq() -> None:
    """Review and replay the dead-letter archive (failed_job_archive)."""


@dlq.command("list")
@_filter_options
def list_command(**filters: Any) -> None:
    """List archive entries, newest first."""
    with _archive_errors():
        entries = list_entries(_archive_filter(**filters))
    if not entries:
        click.echo("no matching dead-letter entries")
        return
    rows = [[getattr(entry, name) for name in _LIST_FIELDS] for entry in entries]
    click.echo(render(_LIST_HEADERS, rows))
    click.echo(f"{len(entries)} {'entry' if len(entries) == 1 else 'entries'}")


@dlq.command()
@click.argument("entry_id", type=click.UUID)
def show(entry_id: uuid.UUID) -> None:
    """Show everything about entry ENTRY_ID: job, error context, review and replay."""
    with _archive_errors():
        entry = get_entry(entry_id)
    if entry is None:
        raise click.ClickException(f"no dead-letter entry {entry_id}")
    click.echo(_describe(entry))


def _describe(entry: ArchivedJob) -> str:
    """The full text of an entry: fields, then the job and the error context as JSON."""
    fields = {
        "id": entry.id,
        "job id": entry.job_id,
        "job type": entry.job_type,
        "category": entry.failure_category,
        "reason": entry.failure_reason,
        "retries": entry.retry_count,
        "store": entry.store_id,
        "business": entry.business_id,
        "archived at": entry.created_at,
        "reviewed": entry.reviewed,
        "reviewed by": entry.reviewed_by,
        "reviewed at": entry.reviewed_at,
        "review note": entry.review_note,
        "resolution": entry.resolution,
        "replays": entry.replay_count,
        "replayed at": entry.replayed_at,
        "replay task": entry.replay_task_id,
    }
    width = max(len(name) for name in fields)
    # The reason is printed whole here (the list truncates it); cell() would cut it.
    lines = [
        f"{name + ':':<{width + 1}} {value if name == 'reason' else cell(value)}"
        for name, value in fields.items()
    ]
    job = {
        "task": entry.task,
        "args": entry.args,
        "kwargs": entry.kwargs,
        "headers": entry.headers,
        "options": entry.options,
    }
    context = dict(entry.error_context)
    trace = context.pop("traceback", None)
    lines += ["", "job data:", _json(job), "", "error context:", _json(context)]
    if trace:
        lines += ["", "traceback:", str(trace).rstrip()]
    return "\n".join(lines)


def _json(value: Any) -> str:
    """Indented JSON; what JSON cannot hold (datetimes, UUIDs) as text."""
    return json.dumps(value, indent=2, sort_keys=True, default=str)


@dlq.command("review")
@click.argument("entry_id", type=click.UUID)
@click.option("--reviewer", required=True, help="Who reviewed it.")
@click.option("--note", help="Replaces the review note.")
@click.option(
    "--resolution", type=click.Choice([r.value for r in ReviewResolution]), help="Resolution."
)
def review_command(
    entry_id: uuid.UUID, reviewer: str, note: str | None, resolution: str | None
) -> None:
    """Mark entry ENTRY_ID reviewed, with an optional note and resolution."""
    with _archive_errors():
        entry = review(
            entry_id,
            reviewer=reviewer,
            note=note,
            resolution=None if resolution is None else ReviewResolution(resolution),
        )
    click.echo(f"entry {entry.id} reviewed by {entry.reviewed_by} ({cell(entry.resolution)})")


@dlq.command("discard")
@click.argument("entry_id", type=click.UUID)
@click.option("--reviewer", required=True, help="Who discards it.")
@click.option("--note", help="Why.")
def discard_command(entry_id: uuid.UUID, reviewer: str, note: str | None) -> None:
    """Resolve entry ENTRY_ID as discarded: a bulk replay will skip it."""
    with _archive_errors():
        entry = discard(entry_id, reviewer=reviewer, note=note)
    click.echo(f"entry {entry.id} discarded by {entry.reviewed_by}")


@dlq.command("replay")
@click.argument("entry_id", type=click.UUID, required=False)
@click.option("--all", "replay_all", is_flag=True, help="Replay every entry the filters match.")
@_filter_options
@click.option("--force", is_flag=True, help="Replay entries already replayed or discarded too.")
@click.option("--replayed-by", help="Who replays (recorded as the reviewer).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (--all).")
def replay_command(
    entry_id: uuid.UUID | None,
    replay_all: bool,
    force: bool,
    replayed_by: str | None,
    yes: bool,
    **filters: Any,
) -> None:
    """Send entry ENTRY_ID's task again, or with --all every entry the filters match."""
    from tasks.replay import enqueue_archived  # lazy: loads the Celery app and its broker

    if entry_id is not None and replay_all:
        raise click.UsageError("give an ENTRY_ID or --all (with filters), not both")
    if entry_id is None and not replay_all:
        raise click.UsageError("give an ENTRY_ID, or --all to replay what the filters match")
    if entry_id is not None:
        with _archive_errors(), _broker_errors():
            result = replay(
                entry_id, enqueue=enqueue_archived, force=force, replayed_by=replayed_by
            )
        click.echo(f"entry {result.entry_id} replayed as task {result.replay_task_id}")
        return
    _replay_all(_archive_filter(**filters), enqueue_archived, force, replayed_by, yes)


def _replay_all(
    criteria: ArchiveFilter,
    enqueue: Callable[[ArchivedJob], str],
    force: bool,
    replayed_by: str | None,
    yes: bool,
) -> None:
    """Confirm, then replay the matching entries with a progress bar, and report each."""
    # The candidates as replay_many selects them (oldest first, replayed/discarded excluded
    # unless forced), so the number confirmed is the number attempted.
    from safeguards.dead_letter.replay import replay_candidates

    with _archive_errors():
        total = len(replay_candidates(criteria, force=force))
    if total == 0:
        click.echo("no matching dead-letter entries to replay")
        return
    if not yes:
        click.confirm(f"Replay {total} dead-letter entries?", abort=True)
    results: list[ReplayResult] = []
    with click.progressbar(length=total, label="replaying", file=sys.stderr) as bar:

        def enqueue_and_tick(job: ArchivedJob) -> str:
            task_id = enqueue(job)
            bar.update(1)
            return task_id

        with _archive_errors(), _broker_errors():
            results = replay_many(
                criteria, enqueue=enqueue_and_tick, force=force, replayed_by=replayed_by
            )
    rows = [
        [r.entry_id, r.job_id, r.replay_task_id if r.replayed else f"skipped: {r.skipped_reason}"]
        for r in results
    ]
    click.echo(render(("entry", "job id", "replay task"), rows))
    replayed = sum(r.replayed for r in results)
    click.echo(f"replayed {replayed} of {len(results)} entries")


@contextmanager
def _broker_errors() -> Iterator[None]:
    """A broker that refuses the publication as one clear line (what was replayed stays so)."""
    try:
        yield
    except (click.ClickException, DeadLetterError, SQLAlchemyError):
        raise
    except Exception as exc:  # kombu's connection errors have no common public base
        raise click.ClickException(
            f"could not publish the replay (entries replayed before stay replayed): {describe(exc)}"
        ) from exc
