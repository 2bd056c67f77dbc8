"""``syncguard cleanup``: run the retention cleanup now and show what each table did."""

from __future__ import annotations

import click

from models import CleanupOutcome
from syncguard.cli.support import fail_on_database_errors
from syncguard.cli.tables import render

__all__ = ["cleanup"]

_HEADERS = ("table", "rows deleted", "duration ms", "complete", "outcome", "error")
_DRY_RUN_HEADERS = ("table", "rows to delete", "duration ms", "outcome", "error")


@click.command()
@click.option("--dry-run", is_flag=True, help="Only count the rows past retention.")
def cleanup(dry_run: bool) -> None:
    """Delete rows past their retention (as Beat does), one audit row per table."""
    from safeguards.cleanup import run_all_cleanup_tasks  # lazy: only this command needs it

    with fail_on_database_errors():
        results = run_all_cleanup_tasks(dry_run=dry_run)
    rows = [
        [r.table, r.rows_deleted, r.duration_ms, r.complete, r.outcome, r.error_message]
        for r in results
    ]
    if dry_run:  # a dry run only counts: it is always complete
        rows = [[*row[:3], *row[4:]] for row in rows]
    click.echo(render(_DRY_RUN_HEADERS if dry_run else _HEADERS, rows))
    run = f"run {results[0].run_id}" if results else "no tables"
    click.echo(f"{run}{' (dry run: nothing deleted)' if dry_run else ''}")
    failed = [r.table for r in results if r.outcome is CleanupOutcome.FAILED]
    if failed:
        raise click.ClickException(f"cleanup failed for {', '.join(failed)} (see the log above)")
