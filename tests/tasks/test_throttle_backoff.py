"""A provider's throttle is waited out for max(its Retry-After, a growing back-off).

A 429 answered with ``Retry-After: 0`` must not remove all back-off: the real sync task runs
in-process against real PostgreSQL and Redis, Gmail scripted over HTTP answering every
``messages.list`` with 429 and ``Retry-After: 0``; what is asserted is the deferral the task
computed (the job's ``eta``), never elapsed time.
"""

from __future__ import annotations

import random
import time
import uuid

import pytest
from sqlalchemy import Engine

from models import SyncJobStatus
from safeguards.backoff import throttle_backoff
from tasks.base import DEFERRALS
from tasks.sync.pipeline import sync_store
from tests.providers import Reply, ScriptedServer
from tests.tasks.test_sync_provider_faults import ROOT, _gmail, _job, _store, gmail

__all__ = ["gmail"]  # the fixture, shared with the module it comes from

THROTTLED = Reply(429, {"error": {"code": 429, "message": "Too many"}}, {"Retry-After": "0"})


def _deferred_eta(engine: Engine, store_id: uuid.UUID, deferrals: int) -> float:
    """The job's eta (epoch seconds) after a sync the provider throttled with Retry-After: 0."""
    headers = {DEFERRALS: deferrals} if deferrals else None
    result = sync_store.apply(args=[str(store_id)], routing_key="sync", headers=headers)
    assert result.state == "RETRY"  # deferred: re-published, no retry spent
    job = _job(engine, store_id)
    assert job.status is SyncJobStatus.DEFERRED, job.error_message
    assert job.eta is not None
    return job.eta.timestamp()


@pytest.mark.parametrize(("deferrals", "at_least_s"), [(0, 1.0), (5, 32.0)])
def test_a_429_with_retry_after_0_still_backs_off_and_more_each_time(
    engine: Engine, gmail: ScriptedServer, deferrals: int, at_least_s: float
) -> None:
    # Given Gmail throttling the listing with "Retry-After: 0", after `deferrals` throttles
    gmail.handler = _gmail(lambda seen: THROTTLED if seen.path == f"{ROOT}/messages" else None)
    store_id = _store(engine)
    before = time.time()

    eta = _deferred_eta(engine, store_id, deferrals)

    # Then the job waits at least half the back-off ceiling (2 s * 2^deferrals), not 0
    assert eta >= before + at_least_s


def test_the_throttle_back_off_grows_and_never_starts_near_zero() -> None:
    rng = random.Random(7)
    waits = [throttle_backoff(n, max_backoff_s=600, rng=rng) for n in range(6)]

    assert all(2.0 * 2**n / 2 <= w <= 2.0 * 2**n for n, w in enumerate(waits))
    assert throttle_backoff(20, max_backoff_s=600, rng=rng) >= 300  # half the cap at least
