"""``/api/v1/jobs``: the sync job ledger over HTTP, filtered, with archive entries, per tenant."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest

import models
from api.api_keys import create_key
from models import SyncJobStatus, SyncTrigger
from syncguard.db import service_session
from tests.factories import make_business, make_store

pytestmark = pytest.mark.usefixtures("engine")


def _headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass(frozen=True)
class Seeded:
    """A tenant's store, its two jobs and their archive entry, its key; a stranger's job."""

    store_id: uuid.UUID
    done_id: uuid.UUID
    archived_id: uuid.UUID
    stranger_id: uuid.UUID
    entry_id: uuid.UUID
    key: str


@pytest.fixture(scope="module")
def seeded() -> Seeded:
    """A business with two jobs (one archived, with its entry) and a tenant key; and a stranger."""
    now = datetime.now(UTC)
    with service_session() as s:
        business = make_business(s, "Jobs")
        store = make_store(s, business)
        task_id = f"task-{uuid.uuid4().hex}"
        done = models.SyncJob(
            store_id=store.id,
            kind="incremental",
            trigger=SyncTrigger.WEBHOOK,
            status=SyncJobStatus.SUCCEEDED,
            attempts=1,
            deferrals=2,
            checkpoint={"cursor": "h-42", "phase": "changes"},
            pages_processed=3,
            started_at=now - timedelta(seconds=12),
            finished_at=now - timedelta(seconds=2),
        )
        archived = models.SyncJob(
            store_id=store.id,
            kind="full",
            trigger=SyncTrigger.MANUAL,
            status=SyncJobStatus.ARCHIVED,
            attempts=6,
            celery_task_id=task_id,
        )
        entry = models.FailedJobArchive(
            store_id=store.id,
            job_id=task_id,
            job_type="tasks.sync.sync_store",
            failure_reason="Gmail answered 503 six times",
            failure_category="transient_exhausted",
            retry_count=5,
            job_data={"task": "tasks.sync.sync_store", "args": [str(store.id)]},
        )
        other = make_store(s, make_business(s, "Stranger"))
        stranger = models.SyncJob(
            store_id=other.id, kind="full", trigger=SyncTrigger.WEBHOOK, status="queued"
        )
        s.add_all([done, archived, entry, stranger])
        s.flush()
        ids = (store.id, done.id, archived.id, stranger.id, entry.id)
        business_id = business.id
    return Seeded(*ids, key=create_key(business_id, "jobs reader")[1])


def test_a_tenant_lists_its_jobs_filtered_by_store_state_and_trigger(
    client: httpx.Client, seeded: Seeded
) -> None:
    key, done_id, archived_id = seeded.key, seeded.done_id, seeded.archived_id

    every = client.get("/api/v1/jobs", headers=_headers(key)).json()["jobs"]
    by_state = {"status": "archived", "store_id": str(seeded.store_id)}
    archived = client.get("/api/v1/jobs", params=by_state, headers=_headers(key)).json()["jobs"]
    webhook = client.get(
        "/api/v1/jobs", params={"trigger": "webhook"}, headers=_headers(key)
    ).json()["jobs"]
    future = client.get(
        "/api/v1/jobs", params={"since": "2999-01-01T00:00:00Z"}, headers=_headers(key)
    ).json()["jobs"]

    assert {j["id"] for j in every} == {str(done_id), str(archived_id)}  # never the stranger's
    assert [(j["id"], j["archive_entry_id"]) for j in archived] == [
        (str(archived_id), str(seeded.entry_id))
    ]
    [done] = webhook
    assert done["id"] == str(done_id)
    assert (done["attempts"], done["deferrals"], done["pages_processed"]) == (1, 2, 3)
    assert done["duration_s"] == pytest.approx(10.0)
    assert done["checkpoint"] == {"cursor": "h-42", "phase": "changes"}
    assert future == []


def test_a_job_shows_its_archive_entry_and_a_foreign_job_is_not_found(
    client: httpx.Client, seeded: Seeded
) -> None:
    key, done_id, archived_id = seeded.key, seeded.done_id, seeded.archived_id

    archived = client.get(f"/api/v1/jobs/{archived_id}", headers=_headers(key))
    done = client.get(f"/api/v1/jobs/{done_id}", headers=_headers(key))
    foreign = client.get(f"/api/v1/jobs/{seeded.stranger_id}", headers=_headers(key))

    assert archived.status_code == 200
    entry = archived.json()["archive_entry"]
    assert entry["id"] == str(seeded.entry_id)
    assert entry["failure_reason"] == "Gmail answered 503 six times"
    assert done.json()["archive_entry"] is None and done.json()["duration_s"] == 10.0
    assert foreign.status_code == 404  # row-level security hides it: not even "forbidden"


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"status": "exploded"}, 422),
        ({"trigger": "x\x00"}, 422),
        ({"store_id": "not-a-uuid"}, 422),
        ({"since": "yesterday"}, 422),
        ({"since": "0001-01-01T00:00:00"}, 422),
        ({"limit": "0"}, 400),
        ({"since": "2030-01-02T00:00:00Z", "until": "2030-01-01T00:00:00Z"}, 400),
    ],
)
def test_bad_filters_are_refused_by_name_never_a_500(
    client: httpx.Client,
    seeded: Seeded,
    params: dict[str, str],
    status: int,
) -> None:
    response = client.get("/api/v1/jobs", params=params, headers=_headers(seeded.key))
    assert response.status_code == status, response.text
    assert "error" in response.json()
