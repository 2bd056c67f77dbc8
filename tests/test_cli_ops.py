"""The operations commands: status, dlq, store and cleanup, in process against real servers."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, select

import models
from models import Business, FailureCategory, ReviewResolution, Store, StoreStatus
from safeguards.dead_letter.archive import get_entry, move_to_dead_letter_queue
from syncguard.cli.main import main
from syncguard.cli.status import SEED_QUERIES
from syncguard.db import service_session
from tests.factories import make_business, make_store
from tests.models.test_seed_status_sql import SEED_QUERIES as SEED_DOC_QUERIES


def _syncguard(
    *args: str, input: str | None = None, env: Mapping[str, str] | None = None
) -> Result:
    return CliRunner().invoke(main, list(args), input=input, env=env)


def _ok(*args: str, **kwargs: str | Mapping[str, str] | None) -> str:
    result = _syncguard(*args, **kwargs)  # type: ignore[arg-type]
    assert result.exit_code == 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback
    return result.output


def _fails(code: int, *args: str, **kwargs: str | None) -> str:
    result = _syncguard(*args, **kwargs)  # type: ignore[arg-type]
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback
    return result.output


# --- status ---------------------------------------------------------------------------------


@pytest.fixture
def scenario(engine: Engine) -> dict[str, uuid.UUID | str]:
    """A store with a limit override, an open circuit, 12 deliveries, metrics, dead letters."""
    reason = f"boom-{uuid.uuid4().hex[:8]}"
    with service_session(engine) as session:
        business = make_business(session, "Status")
        store = make_store(session, business)
        quiet = make_store(session, business)
        session.add_all(
            [
                models.ProviderRateLimit(
                    store_id=store.id, provider="gmail", requests_per_minute=61
                ),
                models.CircuitBreakerState(
                    store_id=store.id, circuit_name="gmail", state="open", trip_count=3
                ),
                *(
                    models.WebhookDeliveryLog(
                        store_id=store.id,
                        webhook_type="gmail_push",
                        success=i % 2 == 0,
                        response_code=204 if i % 2 == 0 else 503,
                        duration_ms=i,
                    )
                    for i in range(12)
                ),
                *(
                    models.SystemHealthMetric(
                        store_id=store.id,
                        metric_type="performance",
                        metric_name="task_duration_ms",
                        metric_value=v,
                    )
                    for v in (10.0, 30.0)
                ),
                models.FailedJobArchive(
                    store_id=store.id,
                    job_id=uuid.uuid4().hex,
                    job_type="tasks.sync.sync_store",
                    failure_reason=reason,
                    failure_category="transient_exhausted",
                ),
                models.FailedJobArchive(
                    store_id=store.id,
                    job_id=uuid.uuid4().hex,
                    job_type="tasks.sync.sync_store",
                    failure_reason="already reviewed",
                    failure_category="unknown",
                    reviewed=True,
                ),
            ]
        )
        return {
            "store": store.id,
            "quiet": quiet.id,
            "business": business.id,
            "slug": business.slug,
            "address": store.mailbox_address,
            "reason": reason,
        }


def test_status_runs_the_seed_queries_verbatim() -> None:
    assert SEED_QUERIES == SEED_DOC_QUERIES


def test_status_of_a_store_shows_the_five_checks(scenario: dict[str, uuid.UUID | str]) -> None:
    output = _ok("status", "--store", str(scenario["store"]))
    for title in (
        "Rate limits:",
        "Circuit breakers:",
        "Last 10 webhook deliveries:",
        "Metric averages, last hour:",
        "Unreviewed dead letters:",
    ):
        assert title in output
    assert " 61 " in output  # requests_per_minute
    circuits = output.split("Circuit breakers:")[1].split("Last 10")[0]
    assert circuits.splitlines()[3].split()[:2] == ["gmail", "open"]
    assert output.count("gmail_push") == 10  # the seed's LIMIT 10 of 12
    assert "performance  task_duration_ms  20.00" in output
    assert scenario["reason"] in output
    assert "already reviewed" not in output


def test_status_of_a_business_covers_each_store(scenario: dict[str, uuid.UUID | str]) -> None:
    output = _ok("status", "--business", str(scenario["business"]))
    assert f"== store {scenario['address']}" in output
    assert str(scenario["quiet"]) in output
    assert output.count("Rate limits:") == 2  # one per store
    assert output.count("Unreviewed dead letters:") == 1  # once for the business
    assert scenario["reason"] in output
    wide = _ok("status", "--store", str(scenario["store"]), "--wide")
    assert "usage_synced_at" in wide and "error_context" in wide


def test_status_overview_lists_businesses_and_open_circuits(
    scenario: dict[str, uuid.UUID | str],
) -> None:
    output = _ok("status")
    summary = next(line for line in output.splitlines() if str(scenario["slug"]) in line)
    assert summary.split()[-5:] == ["2", "2", "1", "1", "6"]  # stores, active, circuits, dlq, 503s
    assert str(scenario["address"]) in output.split("Open circuits:")[1]


def test_status_rejects_bad_and_unknown_ids(scenario: dict[str, uuid.UUID | str]) -> None:
    assert "is not a valid UUID" in _fails(2, "status", "--store", "nope")
    unknown = uuid.uuid4()
    assert f"no store {unknown}" in _fails(1, "status", "--store", str(unknown))
    assert f"no business {unknown}" in _fails(1, "status", "--business", str(unknown))
    with service_session() as session:
        other = str(make_business(session, "Other").id)
    output = _fails(1, "status", "--store", str(scenario["store"]), "--business", other)
    assert "belongs to business" in output


# --- dlq ------------------------------------------------------------------------------------


def _archive(store_id: uuid.UUID, category: FailureCategory, reason: str = "boom") -> uuid.UUID:
    """An archived sync job of ``store_id`` (its replay just waits in the broker)."""
    job_id = uuid.uuid4().hex
    return move_to_dead_letter_queue(
        job_id,
        "tasks.sync.sync_store",
        reason,
        3,
        {"task": "tasks.sync.sync_store", "args": [str(store_id)], "options": {"queue": "sync"}},
        failure_category=category,
        error_context={"exception_type": "TransientFailure", "traceback": "Traceback line 1"},
        store_id=store_id,
    )


@pytest.fixture
def store_id(engine: Engine) -> uuid.UUID:
    """A fresh store, so filters by store see only this test's entries."""
    with service_session(engine) as session:
        return make_store(session, make_business(session, "Dlq")).id


def test_dlq_list_show_review_discard_round_trip(store_id: uuid.UUID) -> None:
    first = _archive(store_id, FailureCategory.TRANSIENT_EXHAUSTED, "gmail 503 x5")
    second = _archive(store_id, FailureCategory.VALIDATION, "bad request")

    listed = _ok("dlq", "list", "--store", str(store_id))
    assert str(first) in listed and str(second) in listed and "2 entries" in listed
    only = _ok("dlq", "list", "--store", str(store_id), "--category", "validation")
    assert str(second) in only and str(first) not in only

    shown = _ok("dlq", "show", str(first))
    assert "gmail 503 x5" in shown and "transient_exhausted" in shown
    assert '"queue": "sync"' in shown and str(store_id) in shown
    assert "traceback:\nTraceback line 1" in shown

    reviewed = _ok(
        "dlq",
        "review",
        str(first),
        "--reviewer",
        "ana",
        "--note",
        "outage",
        "--resolution",
        "fixed",
    )
    assert "reviewed by ana" in reviewed
    entry = get_entry(first)
    assert entry is not None and entry.reviewed and entry.review_note == "outage"
    assert entry.resolution is ReviewResolution.FIXED
    unreviewed = _ok("dlq", "list", "--store", str(store_id), "--unreviewed")
    assert str(first) not in unreviewed and str(second) in unreviewed

    _ok("dlq", "discard", str(second), "--reviewer", "bo", "--note", "store gone")
    entry = get_entry(second)
    assert entry is not None and entry.resolution is ReviewResolution.DISCARDED
    refused = _fails(1, "dlq", "replay", str(second))
    assert "discarded by bo" in refused and "--force" in refused


def test_dlq_rejects_bad_and_unknown_ids() -> None:
    unknown = uuid.uuid4()
    assert f"no dead-letter entry {unknown}" in _fails(1, "dlq", "show", str(unknown))
    assert "no dead-letter entry" in _fails(1, "dlq", "review", str(unknown), "--reviewer", "x")
    assert "no dead-letter entry" in _fails(1, "dlq", "replay", str(unknown))
    assert "is not a valid UUID" in _fails(2, "dlq", "show", "42")
    assert "give an ENTRY_ID, or --all" in _fails(2, "dlq", "replay")
    assert "not an ISO 8601" in _fails(2, "dlq", "list", "--since", "yesterday")
    assert "Missing option '--reviewer'" in _fails(2, "dlq", "discard", str(unknown))


def test_dlq_replay_once_then_refuses_without_force(store_id: uuid.UUID) -> None:
    entry_id = _archive(store_id, FailureCategory.TRANSIENT_EXHAUSTED)

    output = _ok("dlq", "replay", str(entry_id), "--replayed-by", "ana")
    entry = get_entry(entry_id)
    assert entry is not None and entry.replay_task_id is not None
    assert f"replayed as task {entry.replay_task_id}" in output

    refused = _fails(1, "dlq", "replay", str(entry_id))
    assert "already replayed" in refused and "--force" in refused

    _ok("dlq", "replay", str(entry_id), "--force")
    entry = get_entry(entry_id)
    assert entry is not None and entry.replay_count == 2


def test_dlq_replay_all_by_category_replays_exactly_the_matches(store_id: uuid.UUID) -> None:
    matching = {_archive(store_id, FailureCategory.VALIDATION) for _ in range(3)}
    other = _archive(store_id, FailureCategory.TRANSIENT_EXHAUSTED)
    filters = ("--category", "validation", "--store", str(store_id))

    declined = _fails(1, "dlq", "replay", "--all", *filters, input="n\n")
    assert "Replay 3 dead-letter entries?" in declined and "Aborted" in declined
    assert all(get_entry(e).replay_task_id is None for e in matching)  # type: ignore[union-attr]

    output = _ok("dlq", "replay", "--all", "--yes", *filters)
    assert "replayed 3 of 3 entries" in output
    for entry_id in matching:
        entry = get_entry(entry_id)
        assert entry is not None and entry.replay_task_id in output
    untouched = get_entry(other)
    assert untouched is not None and untouched.replay_task_id is None
    again = _ok("dlq", "replay", "--all", "--yes", *filters)
    assert "no matching dead-letter entries to replay" in again


# --- store ----------------------------------------------------------------------------------


def test_store_add_list_connect_round_trip(engine: Engine) -> None:
    from tasks.provider_clients import store_credentials

    slug = f"acme-{uuid.uuid4().hex[:8]}"
    address = f"Shop-{uuid.uuid4().hex[:6]}@Acme.COM"
    unknown = _fails(
        1, "store", "add", "--business", slug, "--provider", "gmail", "--address", address
    )
    assert f"no business {slug}" in unknown
    added = _ok(
        "store", "add", "--business", slug, "--create-business", "Acme",
        "--provider", "gmail", "--address", address, "--name", "Shop",
    )  # fmt: skip
    with service_session(engine) as session:
        store = session.scalars(select(Store).where(Store.mailbox_address == address.lower())).one()
        business = session.get(Business, store.business_id)
        assert business is not None and business.slug == slug and business.name == "Acme"
    assert str(store.id) in added and store.status is StoreStatus.PAUSED
    duplicate = _fails(
        1, "store", "add", "--business", slug, "--provider", "gmail", "--address", address.upper()
    )
    assert "already exists" in duplicate
    assert "not an e-mail address" in _fails(
        2, "store", "add", "--business", slug, "--provider", "gmail", "--address", "nobody"
    )

    listed = _ok("store", "list", "--business", slug)
    row = next(line for line in listed.splitlines() if str(store.id) in line)
    assert row.split()[1:] == [slug, "gmail", address.lower(), "paused", "-", "no", "no"]

    secret, token = f"secret-{uuid.uuid4().hex}", f"token-{uuid.uuid4().hex}"
    connected = _ok("store", "connect", str(store.id), input=f"client-1\n{secret}\n{token}\n")
    assert secret not in connected and token not in connected
    assert "store active" in connected
    with service_session(engine) as session:
        row_store = session.get(Store, store.id)
        assert row_store is not None and row_store.status is StoreStatus.ACTIVE
        assert row_store.credentials_encrypted is not None
        assert secret.encode() not in row_store.credentials_encrypted
        assert token.encode() not in row_store.credentials_encrypted
        credentials = store_credentials(row_store)
    assert (credentials.client_id, credentials.client_secret) == ("client-1", secret)
    assert credentials.refresh_token == token
    listed = _ok("store", "list", "--business", str(store.business_id))
    assert next(line for line in listed.splitlines() if str(store.id) in line).split()[-3:] == [
        "-",
        "no",
        "yes",
    ]


def test_store_connect_takes_the_grant_from_the_environment(engine: Engine) -> None:
    with service_session(engine) as session:
        store_id = make_store(session, make_business(session, "Env")).id
    env = {
        "SYNCGUARD_OAUTH_CLIENT_ID": "env-client",
        "SYNCGUARD_OAUTH_CLIENT_SECRET": "env-secret-value",
        "SYNCGUARD_OAUTH_REFRESH_TOKEN": "env-refresh-value",
    }
    output = _ok("store", "connect", str(store_id), "--subscribe", "--sync", env=env)
    assert "env-secret-value" not in output and "env-refresh-value" not in output
    assert "subscription task" in output  # the messages wait in the broker: no worker here
    with service_session(engine) as session:
        job = session.scalars(
            select(models.SyncJob).where(models.SyncJob.store_id == store_id)
        ).one()
    assert f"sync job {job.id} queued" in output


def test_store_connect_refuses_an_unknown_store_before_prompting() -> None:
    unknown = uuid.uuid4()
    output = _fails(1, "store", "connect", str(unknown))
    assert f"no store {unknown}" in output and "Client secret" not in output


# --- cleanup --------------------------------------------------------------------------------


def test_cleanup_dry_run_prints_each_table() -> None:
    output = _ok("cleanup", "--dry-run")
    assert "rows to delete" in output and "dry run: nothing deleted" in output
    for table in ("webhook_delivery_log", "failed_job_archive", "system_health_metrics"):
        row = next(line for line in output.splitlines() if line.startswith(table))
        assert "dry_run" in row
