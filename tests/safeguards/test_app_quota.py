"""The provider-app quota: leased blocks, exact across worker processes, on the real Redis."""

from __future__ import annotations

import multiprocessing
import random
import time
import uuid

import pytest
import redis

from models import Provider
from safeguards.clock import ManualClock
from safeguards.rate_limit.app_limits import (
    GMAIL_APP_QUOTA,
    OUTLOOK_APP_QUOTA,
    AppId,
    AppQuota,
    quota_for,
)
from safeguards.rate_limit.app_quota import AppQuotaPool

START = 1_700_000_000.0
#: A small quota that real processes exhaust quickly: 300 units per 1.5 s, spent within 0.3 s.
SMALL = AppQuota(limit=300, window_ms=1_500, block=8, validity_ms=300, bucket_ms=50)


def _app(provider: Provider = Provider.GMAIL) -> AppId:
    return AppId(provider, f"client-{uuid.uuid4().hex[:8]}.apps.googleusercontent.com")


def _pool(client: redis.Redis, clock: ManualClock, quota: AppQuota) -> AppQuotaPool:
    return AppQuotaPool(client, clock, quota_of=lambda _app: quota)


def _spend(
    app_name: str, block: int, run_s: float, seed: int
) -> tuple[list[tuple[float, int]], int]:
    """One worker process: take units as fast as it can for ``run_s``; (spent log, refusals)."""
    import os

    from safeguards.rate_limit.app_quota import AppQuotaPool

    quota = AppQuota(SMALL.limit, SMALL.window_ms, block, SMALL.validity_ms, SMALL.bucket_ms)
    pool = AppQuotaPool(redis.Redis.from_url(os.environ["REDIS_URL"]), quota_of=lambda _a: quota)
    app, rng = AppId.parse(app_name), random.Random(seed)
    spent: list[tuple[float, int]] = []
    refusals = 0
    stop = time.time() + run_s  # how long to run, not an assertion
    while time.time() < stop:
        units = rng.randint(1, 4)
        decision = pool.take(app, units)
        if decision.allowed:
            spent.append((time.time(), units))  # the provider call would go out now
        else:
            refusals += 1
            time.sleep(min(decision.retry_after_s, 0.01))
    return spent, refusals


@pytest.mark.parametrize("block", [1, 8])
def test_no_window_holds_more_than_the_app_quota_across_processes(block: int) -> None:
    # Given four real worker processes spending one app's quota as fast as they can
    app = _app()
    with multiprocessing.get_context("spawn").Pool(4) as procs:
        results = procs.starmap(_spend, [(app.name, block, 4.0, seed) for seed in range(4)])
    spent = sorted(entry for log, _ in results for entry in log)
    # Then no window of the quota's length, anywhere in the run, holds more than the limit
    window_s = SMALL.window_ms / 1000
    heaviest = max(sum(u for t, u in spent if end - window_s < t <= end) for end, _ in spent)
    assert heaviest <= SMALL.limit
    # ... and the quota really was the bottleneck: the processes were refused
    assert sum(refusals for _, refusals in results) > 0
    assert heaviest > SMALL.limit // 2


def test_a_leased_block_is_spent_in_process(redis_client: redis.Redis) -> None:
    # Given a block of 8 units leased for a call of 2
    pool, app = _pool(redis_client, ManualClock(START), SMALL), _app()
    first = pool.take(app, 2)
    assert first.allowed and first.round_trip
    # Then the next three calls of 2 cost no round trip; the fifth leases again
    assert [pool.take(app, 2).round_trip for _ in range(4)] == [False, False, False, True]
    assert pool.usage(app).used == 16


def test_unspent_units_go_back(redis_client: redis.Redis) -> None:
    # Given a quota of 10 units with blocks of 10, and one worker that spent 3 of its block
    quota = AppQuota(limit=10, window_ms=1_000, block=10, validity_ms=200, bucket_ms=100)
    clock, app = ManualClock(START), _app()
    holder, other = _pool(redis_client, clock, quota), _pool(redis_client, clock, quota)
    assert holder.take(app, 3).allowed and holder.held(app) == 7
    # Then another worker finds nothing left...
    refused = other.take(app, 1)
    assert not refused.allowed and refused.reason == "app_quota"
    # ... until the holder gives its 7 back (process exit), which frees exactly those
    assert holder.return_all() == 7
    usage = other.usage(app)
    assert (usage.used, usage.returned_total) == (3, 7)
    clock.advance(refused.retry_after_s)  # past the other worker's remembered refusal
    assert other.take(app, 7).allowed


def test_leftover_goes_back_with_the_next_lease(redis_client: redis.Redis) -> None:
    # Given a worker holding 6 of a block of 8 when a call of 7 needs more
    quota = AppQuota(limit=100, window_ms=1_000, block=8, validity_ms=200, bucket_ms=100)
    pool, app = _pool(redis_client, ManualClock(START), quota), _app()
    pool.take(app, 2)
    decision = pool.take(app, 7)
    # Then one round trip returned the 6 and leased 8 more: 2 + 8 used, 1 held
    assert decision.allowed and decision.round_trip
    assert (pool.usage(app).used, pool.held(app)) == (10, 1)


def test_the_window_rolls_over(redis_client: redis.Redis) -> None:
    # Given an app whose 20 units per second are spent
    quota = AppQuota(limit=20, window_ms=1_000, block=5, validity_ms=200, bucket_ms=100)
    clock, app = ManualClock(START), _app(Provider.OUTLOOK)
    pool = _pool(redis_client, clock, quota)
    while pool.take(app, 1).allowed:
        pass
    assert pool.usage(app).used == 20
    refused = pool.take(app, 1)
    # Then the refusal is remembered in process (no round trip) until its retry-after, which
    # is when the first grant's bucket leaves the window plus the validity (1.2 s)...
    assert not refused.allowed and not refused.round_trip
    assert refused.retry_after_s == pytest.approx(1.2, abs=0.11)
    clock.advance(refused.retry_after_s)
    # ... and then the quota is there again
    assert pool.take(app, 1).allowed


def test_a_refused_call_gives_its_units_back_in_process(redis_client: redis.Redis) -> None:
    pool, app = _pool(redis_client, ManualClock(START), SMALL), _app()
    taken = pool.take(app, 3)
    pool.give_back(app, taken)  # the store's limiter refused the call: it never happened
    assert pool.held(app) == 8
    assert pool.usage(app).used == 8


def test_units_go_back_only_to_a_block_of_their_grant_bucket(redis_client: redis.Redis) -> None:
    # Given units taken from one block, and a new block leased in a later bucket meanwhile
    clock, app = ManualClock(START), _app()
    pool = _pool(redis_client, clock, SMALL)
    taken = pool.take(app, 3)
    clock.advance(SMALL.bucket_ms / 1000)
    pool.take(app, 6)  # 5 left: a new lease, in the next bucket
    held = pool.held(app)
    # Then they do not join it (they must be spent within V of their own bucket)
    pool.give_back(app, taken)
    assert pool.held(app) == held


def test_a_call_dearer_than_the_quota_is_refused_for_good(redis_client: redis.Redis) -> None:
    quota = AppQuota(limit=5, window_ms=1_000, block=1, validity_ms=100, bucket_ms=100)
    decision = _pool(redis_client, ManualClock(START), quota).take(_app(), 6)
    assert not decision.allowed and decision.reason == "cost_exceeds_limit"


def test_the_quota_comes_from_provider_defaults_and_overrides() -> None:
    gmail = AppId(Provider.GMAIL, "123.apps.googleusercontent.com")
    graph = AppId(Provider.OUTLOOK, "5f0c-app", "tenant-1")
    assert quota_for(gmail, {}, {}) == GMAIL_APP_QUOTA
    assert quota_for(graph, {}, {}) == OUTLOOK_APP_QUOTA
    limits = {"gmail": 600_000, "outlook:5f0c-app@tenant-1": 5_000}
    assert quota_for(gmail, limits, {"gmail": 50}).limit == 600_000
    assert quota_for(gmail, limits, {"gmail": 50}).block == 50
    assert quota_for(graph, limits, {}).limit == 5_000
    assert not quota_for(graph, {"outlook": 0}, {}).enabled
    with pytest.raises(ValueError):
        quota_for(gmail, {}, {"gmail": 0})
    assert AppId.parse(graph.name) == graph
    assert AppId.parse(AppId(Provider.OUTLOOK, "x").name) == AppId(Provider.OUTLOOK, "x")


def test_a_disabled_quota_admits_without_redis(redis_client: redis.Redis) -> None:
    off = AppQuota(limit=0, window_ms=1_000, block=1, validity_ms=100, bucket_ms=100)
    decision = _pool(redis_client, ManualClock(START), off).take(_app(), 5)
    assert decision.allowed and not decision.round_trip


def test_every_leased_app_is_listed(redis_client: redis.Redis) -> None:
    pool, app = _pool(redis_client, ManualClock(START), SMALL), _app(Provider.OUTLOOK)
    pool.take(app, 4)
    listed = {u.app: u for u in pool.usages()}
    assert listed[app.name].used == 8
    assert listed[app.name].limit == SMALL.limit
    assert listed[app.name].provider == "outlook"
