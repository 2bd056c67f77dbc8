"""The dead-letter archive on the real database: archive, review, replay, and the replay race."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text

from models import FailureCategory, ReviewResolution
from safeguards.dead_letter.archive import (
    ArchivedJob,
    ArchiveFilter,
    discard,
    error_context_from,
    get_entry,
    list_entries,
    move_to_dead_letter_queue,
    replay,
    replay_many,
    review,
)
from safeguards.errors import ArchiveEntryNotFound, ReplayRefused
from syncguard.db import service_session
from tests.factories import make_business, make_store

SECRET = "sk-live-1d2f3c4b5a69788"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
SEED_DEAD_LETTERS = (
    "SELECT * FROM failed_job_archive WHERE business_id = 'your-business-id' AND reviewed = false;"
)


@dataclass
class Tenant:
    business_id: uuid.UUID
    store_id: uuid.UUID


@dataclass
class RecordingEnqueue:
    """The injection point replay calls: records each job and hands out a new task id."""

    calls: list[ArchivedJob] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, job: ArchivedJob) -> str:
        with self.lock:
            self.calls.append(job)
        return f"replay-{uuid.uuid4()}"


@pytest.fixture
def tenant(engine: Engine) -> Tenant:
    with service_session(engine) as session:
        business = make_business(session)
        store = make_store(session, business)
        return Tenant(business.id, store.id)


def _job(store_id: uuid.UUID, **kwargs: Any) -> dict[str, Any]:
    return {
        "task": "tasks.sync.sync_store",
        "args": [str(store_id), "incremental"],
        "kwargs": {"trigger": "webhook", "page_token": "CAIQ12", **kwargs},
        "headers": {"x-syncguard-origin": "webhook", "x-attempt": 3},
        "options": {"queue": "sync", "routing_key": "sync.gmail", "priority": 5},
    }


def _archive(
    tenant: Tenant, category: FailureCategory = FailureCategory.TRANSIENT_EXHAUSTED, **kw: Any
) -> uuid.UUID:
    return move_to_dead_letter_queue(
        kw.pop("job_id", str(uuid.uuid4())),
        "tasks.sync.sync_store",
        kw.pop("failure_reason", "HTTP 503 after 5 retries"),
        5,
        kw.pop("job_data", _job(tenant.store_id)),
        failure_category=category,
        store_id=tenant.store_id,
        **kw,
    )


def _row_json(engine: Engine, entry_id: uuid.UUID) -> str:
    with engine.connect() as conn:
        return str(
            conn.execute(
                text("SELECT row_to_json(f)::text FROM failed_job_archive f WHERE id = :id"),
                {"id": entry_id},
            ).scalar_one()
        )


def _entry(entry_id: uuid.UUID) -> ArchivedJob:
    entry = get_entry(entry_id)
    assert entry is not None
    return entry


# --- archiving -------------------------------------------------------------------------------


def test_archive_keeps_the_complete_job_and_its_category(tenant: Tenant) -> None:
    job_data = _job(tenant.store_id)

    entry_id = _archive(
        tenant, FailureCategory.CURSOR_LOST, job_id="celery-task-1-" + uuid.uuid4().hex
    )

    entry = _entry(entry_id)
    assert (entry.task, entry.args, entry.kwargs) == (
        job_data["task"],
        job_data["args"],
        job_data["kwargs"],
    )
    assert (entry.headers, entry.options) == (job_data["headers"], job_data["options"])
    assert entry.failure_category is FailureCategory.CURSOR_LOST
    assert entry.retry_count == 5
    assert entry.failure_reason == "HTTP 503 after 5 retries"
    assert entry.business_id == tenant.business_id  # filled by the trigger from store_id
    assert not entry.reviewed


def test_archive_is_idempotent_on_job_id_and_keeps_the_first_row(tenant: Tenant) -> None:
    job_id = str(uuid.uuid4())

    first = _archive(tenant, job_id=job_id, failure_reason="first")
    again = _archive(tenant, job_id=job_id, failure_reason="redelivered")

    assert again == first
    assert len(list_entries(ArchiveFilter(store_id=tenant.store_id))) == 1
    assert _entry(first).failure_reason == "first"


def test_a_job_whose_store_was_deleted_is_archived_without_it(engine: Engine) -> None:
    gone, business_gone = uuid.uuid4(), uuid.uuid4()
    with service_session(engine) as session:  # the caller's own transaction stays usable
        entry_id = move_to_dead_letter_queue(
            "job-of-a-deleted-store",
            "tasks.sync.sync_store",
            "ValidationFailure: store does not exist",
            0,
            _job(gone),
            failure_category=FailureCategory.VALIDATION,
            error_context={"exception_type": "ValidationFailure"},
            store_id=gone,
            business_id=business_gone,
            session=session,
        )
        session.execute(text("SELECT 1"))
    entry = _entry(entry_id)
    assert (entry.store_id, entry.business_id) == (None, None)
    assert entry.args[0] == str(gone)  # what is known is kept
    assert entry.error_context == {
        "exception_type": "ValidationFailure",
        "dangling_references": {"store_id": str(gone), "business_id": str(business_gone)},
    }


def test_only_the_reference_that_dangles_is_left_out(engine: Engine, tenant: Tenant) -> None:
    gone = uuid.uuid4()
    entry_id = move_to_dead_letter_queue(
        str(uuid.uuid4()),
        "tasks.sync.sync_store",
        "ValidationFailure: store does not exist",
        0,
        _job(gone),
        store_id=gone,
        business_id=tenant.business_id,
    )
    entry = _entry(entry_id)
    assert (entry.store_id, entry.business_id) == (None, tenant.business_id)
    assert entry.error_context["dangling_references"] == {"store_id": str(gone)}


def test_the_seed_query_shows_the_unreviewed_entry(engine: Engine, tenant: Tenant) -> None:
    entry_id = _archive(tenant)

    with engine.connect() as conn:
        sql = SEED_DEAD_LETTERS.replace("your-business-id", str(tenant.business_id))
        rows = [dict(row._mapping) for row in conn.execute(text(sql))]

    assert [row["id"] for row in rows] == [entry_id]
    assert rows[0]["job_data"]["task"] == "tasks.sync.sync_store"


def test_job_type_fills_a_missing_task_name_and_parts(tenant: Tenant) -> None:
    entry_id = move_to_dead_letter_queue(str(uuid.uuid4()), "tasks.x.y", "boom", 0, {"args": [1]})

    entry = _entry(entry_id)
    assert (entry.task, entry.args, entry.kwargs, entry.headers, entry.options) == (
        "tasks.x.y", [1], {}, {}, {},
    )  # fmt: skip
    assert entry.store_id is None and entry.business_id is None


def test_secrets_never_reach_the_stored_row(engine: Engine, tenant: Tenant) -> None:
    job_data = _job(tenant.store_id, access_token=SECRET, credentials={"refresh_token": SECRET})
    job_data["args"].append({"client_secret": SECRET})
    job_data["headers"]["Authorization"] = f"Bearer {SECRET}"
    job_data["headers"]["argsrepr"] = f"('s', {{'password': '{SECRET}'}})"
    try:
        raise RuntimeError(f"401 for https://gmail.test/?access_token={SECRET} signed {JWT}")
    except RuntimeError as exc:
        context = error_context_from(exc, worker="celery@w1")
        reason = str(exc)

    entry_id = _archive(tenant, job_data=job_data, failure_reason=reason, error_context=context)

    stored = _row_json(engine, entry_id)
    assert SECRET not in stored
    assert JWT not in stored
    assert "[REDACTED]" in stored
    assert "CAIQ12" in stored  # a sync cursor is not a secret: replay needs it


def test_error_context_has_type_message_traceback_worker_and_times() -> None:
    started = datetime.now(UTC) - timedelta(seconds=2)
    try:
        raise ValueError("bad history id")
    except ValueError as exc:
        context = error_context_from(exc, worker="celery@w1", started_at=started)

    assert context["exception_type"] == "builtins.ValueError"
    assert context["exception_message"] == "bad history id"
    assert "Traceback" in context["traceback"] and "bad history id" in context["traceback"]
    assert context["worker"] == "celery@w1"
    assert context["started_at"] == started.isoformat()
    assert context["duration_s"] >= 2


# --- review ----------------------------------------------------------------------------------


def test_review_records_reviewer_note_and_resolution(tenant: Tenant) -> None:
    entry_id = _archive(tenant)

    reviewed = review(
        entry_id, reviewer="ops@acme", note="provider bug", resolution=ReviewResolution.WONT_FIX
    )

    assert reviewed.reviewed and reviewed.reviewed_by == "ops@acme"
    assert reviewed.review_note == "provider bug"
    assert reviewed.resolution is ReviewResolution.WONT_FIX
    assert reviewed.reviewed_at is not None
    assert _entry(entry_id) == reviewed


def test_discard_resolves_the_entry_and_hides_it_from_the_unreviewed_list(tenant: Tenant) -> None:
    entry_id = _archive(tenant)

    discarded = discard(entry_id, reviewer="ops@acme", note="duplicate")

    assert discarded.resolution is ReviewResolution.DISCARDED and discarded.reviewed
    assert list_entries(ArchiveFilter(store_id=tenant.store_id, reviewed=False)) == []


def test_review_of_an_unknown_entry_raises() -> None:
    with pytest.raises(ArchiveEntryNotFound):
        review(uuid.uuid4(), reviewer="ops")
    assert get_entry(uuid.uuid4()) is None


def test_list_entries_filters_by_category_and_job_type(tenant: Tenant) -> None:
    auth = _archive(tenant, FailureCategory.AUTHENTICATION)
    _archive(tenant, FailureCategory.VALIDATION)

    found = list_entries(
        ArchiveFilter(store_id=tenant.store_id, category=FailureCategory.AUTHENTICATION)
    )
    other_type = list_entries(ArchiveFilter(store_id=tenant.store_id, job_type="tasks.other"))

    assert [e.id for e in found] == [auth]
    assert other_type == []


# --- replay ----------------------------------------------------------------------------------


def test_replay_sends_exactly_the_original_job_and_links_the_new_task(tenant: Tenant) -> None:
    job_data = _job(tenant.store_id)
    entry_id = _archive(tenant, job_data=job_data)
    enqueue = RecordingEnqueue()

    result = replay(entry_id, enqueue=enqueue, replayed_by="ops@acme")

    [sent] = enqueue.calls
    assert (sent.task, sent.args, sent.kwargs) == (
        job_data["task"],
        job_data["args"],
        job_data["kwargs"],
    )
    assert (sent.headers, sent.options) == (job_data["headers"], job_data["options"])
    entry = _entry(entry_id)
    assert result.replayed and result.replay_task_id == entry.replay_task_id
    assert entry.replay_task_id is not None and entry.replay_task_id.startswith("replay-")
    assert entry.replay_count == 1 and entry.replayed_at is not None
    assert entry.resolution is ReviewResolution.REPLAYED
    assert entry.reviewed and entry.reviewed_by == "ops@acme"


def test_a_second_replay_is_refused_unless_forced(tenant: Tenant) -> None:
    entry_id = _archive(tenant)
    enqueue = RecordingEnqueue()
    first = replay(entry_id, enqueue=enqueue)

    with pytest.raises(ReplayRefused, match=r"already replayed.*force=True"):
        replay(entry_id, enqueue=enqueue)
    forced = replay(entry_id, enqueue=enqueue, force=True)

    assert len(enqueue.calls) == 2
    assert forced.replay_count == 2
    assert forced.replay_task_id != first.replay_task_id
    assert _entry(entry_id).replay_task_id == forced.replay_task_id


def test_a_discarded_entry_is_replayed_only_when_forced(tenant: Tenant) -> None:
    entry_id = _archive(tenant)
    discard(entry_id, reviewer="ops")
    enqueue = RecordingEnqueue()

    with pytest.raises(ReplayRefused, match="discarded"):
        replay(entry_id, enqueue=enqueue)
    replay(entry_id, enqueue=enqueue, force=True)

    assert len(enqueue.calls) == 1


def test_replay_of_an_unknown_entry_raises() -> None:
    with pytest.raises(ArchiveEntryNotFound):
        replay(uuid.uuid4(), enqueue=RecordingEnqueue())


def test_a_failing_enqueue_leaves_the_entry_unreplayed(tenant: Tenant) -> None:
    entry_id = _archive(tenant)

    def broker_down(job: ArchivedJob) -> str:
        raise ConnectionError("broker unreachable")

    with pytest.raises(ConnectionError):
        replay(entry_id, enqueue=broker_down)

    entry = _entry(entry_id)
    assert entry.replayed_at is None and entry.replay_task_id is None
    assert entry.replay_count == 0 and entry.resolution is None and not entry.reviewed
    assert replay(entry_id, enqueue=RecordingEnqueue()).replayed  # and it can be retried


def test_concurrent_replays_of_one_entry_enqueue_exactly_once(tenant: Tenant) -> None:
    entry_id = _archive(tenant)
    operators = 6
    start = threading.Barrier(operators)
    losers_done = threading.Semaphore(0)
    calls: list[str] = []
    refused: list[ReplayRefused] = []

    def slow_enqueue(job: ArchivedJob) -> str:
        calls.append(job.job_id)
        # Hold the claim until every other operator has tried, so they truly overlap.
        for _ in range(operators - 1):
            assert losers_done.acquire(timeout=10)
        return "replay-winner"

    def operator() -> None:
        start.wait()
        try:
            replay(entry_id, enqueue=slow_enqueue)
        except ReplayRefused as exc:
            refused.append(exc)
            losers_done.release()

    threads = [threading.Thread(target=operator) for _ in range(operators)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(calls) == 1
    assert len(refused) == operators - 1
    assert all("being replayed" in str(exc) for exc in refused)
    entry = _entry(entry_id)
    assert entry.replay_count == 1 and entry.replay_task_id == "replay-winner"


# --- bulk replay -----------------------------------------------------------------------------


@pytest.fixture
def three_entries(engine: Engine, tenant: Tenant) -> Iterator[list[uuid.UUID]]:
    """An old auth failure, a recent auth failure and a recent validation failure."""
    old = _archive(tenant, FailureCategory.AUTHENTICATION)
    recent = _archive(tenant, FailureCategory.AUTHENTICATION)
    other = _archive(tenant, FailureCategory.VALIDATION)
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE failed_job_archive SET created_at = now() - interval '2 days' "
                "WHERE id = :id"
            ),
            {"id": old},
        )
    yield [old, recent, other]


def test_replay_many_by_category_and_store(tenant: Tenant, three_entries: list[uuid.UUID]) -> None:
    old, recent, _ = three_entries
    enqueue = RecordingEnqueue()
    criteria = ArchiveFilter(store_id=tenant.store_id, category=FailureCategory.AUTHENTICATION)

    results = replay_many(criteria, enqueue=enqueue)

    assert [r.entry_id for r in results] == [old, recent]  # oldest first
    assert all(r.replayed for r in results)
    assert sorted(j.id for j in enqueue.calls) == sorted([old, recent])
    assert replay_many(criteria, enqueue=enqueue) == []  # already replayed: not candidates
    assert len(replay_many(criteria, enqueue=enqueue, force=True)) == 2


def test_replay_many_by_time_range(tenant: Tenant, three_entries: list[uuid.UUID]) -> None:
    old, recent, other = three_entries
    now = datetime.now(UTC)
    enqueue = RecordingEnqueue()

    last_day = replay_many(
        ArchiveFilter(store_id=tenant.store_id, since=now - timedelta(days=1)), enqueue=enqueue
    )
    before = replay_many(
        ArchiveFilter(store_id=tenant.store_id, until=now - timedelta(days=1)), enqueue=enqueue
    )

    assert {r.entry_id for r in last_day} == {recent, other}
    assert [r.entry_id for r in before] == [old]


def test_replay_many_skips_discarded_and_honours_the_limit(
    tenant: Tenant, three_entries: list[uuid.UUID]
) -> None:
    old, recent, other = three_entries
    discard(old, reviewer="ops")
    enqueue = RecordingEnqueue()

    results = replay_many(ArchiveFilter(store_id=tenant.store_id, limit=1), enqueue=enqueue)

    assert [r.entry_id for r in results] == [recent] or [r.entry_id for r in results] == [other]
    assert len(enqueue.calls) == 1


def test_replay_many_reports_an_entry_another_operator_holds_as_skipped(
    engine: Engine, tenant: Tenant
) -> None:
    held = _archive(tenant)
    enqueue = RecordingEnqueue()

    with engine.begin() as other_operator:
        other_operator.execute(
            text("SELECT id FROM failed_job_archive WHERE id = :id FOR UPDATE"), {"id": held}
        )
        [result] = replay_many(ArchiveFilter(store_id=tenant.store_id), enqueue=enqueue)

    assert not result.replayed and result.entry_id == held
    assert result.skipped_reason is not None and "being replayed" in result.skipped_reason
    assert enqueue.calls == []
