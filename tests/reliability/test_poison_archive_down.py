"""A poison message whose archive cannot be written is not acknowledged: it waits in the broker.

A worker whose database does not exist cannot archive: the poison messages must come back
(redelivered, not dropped, the worker alive) until a worker that can archive takes them, and
then each is archived exactly once.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

from sqlalchemy import Engine, make_url, select

from models import FailedJobArchive, FailureCategory
from syncguard.db import service_session
from tasks import app
from tasks.queues import SYNC
from tests.sync_support import eventually
from tests.worker import running_worker

#: Failed archive attempts of each message to see before the database comes back.
ATTEMPTS = 2


def _log_of(proc: subprocess.Popen[str]) -> Path:
    # running_worker sends the worker's output to a temporary file: find it through /proc.
    return Path(os.readlink(f"/proc/{proc.pid}/fd/1"))


def _rows(engine: Engine, job_id: str) -> list[FailedJobArchive]:
    with service_session(engine) as session:
        rows = list(
            session.scalars(select(FailedJobArchive).where(FailedJobArchive.job_id == job_id))
        )
        session.expunge_all()
        return rows


def test_poison_waits_in_the_broker_until_it_can_be_archived(engine: Engine) -> None:
    missing_db = make_url(os.environ["DATABASE_URL"]).set(database=f"missing_{uuid.uuid4().hex}")
    unknown = app.send_task("tasks.no_such_task", args=["archive-down"], queue=SYNC)
    bad_args = app.send_task("tasks.maintenance.heartbeat", args=["archive-down"], queue=SYNC)
    # A non-safeguarded task failing on malformed input: archived by on_failure.
    failing = app.send_task(
        "tasks.outbound.deliver_event",
        kwargs={"endpoint_id": "not-a-uuid", "message_id": "m", "event_type": "e", "payload": {}},
        queue=SYNC,
    )
    jobs = {
        unknown.id: "archiving poison message {} failed",
        bad_args.id: "archiving tasks.maintenance.heartbeat[{}] failed",
        failing.id: "archiving tasks.outbound.deliver_event[{}] failed",
    }

    env = {"DATABASE_URL": missing_db.render_as_string(hide_password=False)}
    with running_worker(env=env, purge_first=False, purge_last=False) as proc:
        log = _log_of(proc)

        def each_came_back() -> bool:
            text = log.read_text()
            return all(text.count(line.format(job)) >= ATTEMPTS for job, line in jobs.items())

        eventually(each_came_back, timeout_s=60)
        assert proc.poll() is None
    assert all(_rows(engine, job) == [] for job in jobs)

    with running_worker(purge_first=False):
        rows = [eventually(lambda job=job: _rows(engine, job), timeout_s=30) for job in jobs]

    assert [len(r) for r in rows] == [1, 1, 1]
    assert {r[0].failure_category for r in rows} == {FailureCategory.VALIDATION}
    assert rows[0][0].job_data["args"] == rows[1][0].job_data["args"] == ["archive-down"]
