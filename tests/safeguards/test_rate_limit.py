"""Guarantees of the distributed rate limiter, against the real Redis and PostgreSQL."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
import uuid
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, text

from models import Provider
from safeguards.clock import ManualClock
from safeguards.errors import RateLimited, SafeguardUnavailable
from safeguards.rate_limit.limiter import RateLimiter, record_rate_limit_request
from safeguards.rate_limit.limits import HOUR, MINUTE, WINDOWS, RateLimits
from syncguard.db import service_session
from tests.factories import make_business, make_store

GMAIL = Provider.GMAIL
START = 1_700_000_000.0


def _limiter(client: redis.Redis, clock: ManualClock, limits: RateLimits, **kw: Any) -> RateLimiter:
    return RateLimiter(client, clock, limits={GMAIL: limits, Provider.OUTLOOK: limits}, **kw)


def _store() -> str:
    return str(uuid.uuid4())


def _used(limiter: RateLimiter, store: str) -> dict[str, int]:
    return {w.name: w.used for w in limiter.usage(store, provider=GMAIL).windows}


def test_no_window_ever_holds_more_than_its_limit(redis_client: redis.Redis) -> None:
    # Given small limits and a brute-force record of every admitted hit
    limits = RateLimits(per_minute=40, per_hour=150, per_day=400, concurrency=0)
    clock, store, rng = ManualClock(START), _store(), random.Random(7)
    limiter = _limiter(redis_client, clock, limits)
    admitted: list[tuple[int, int]] = []  # (ms, cost)

    def in_window(now_ms: int, length_ms: int) -> int:
        return sum(c for t, c in admitted if now_ms - length_ms < t <= now_ms)

    for _ in range(1500):
        clock.advance(rng.choice([0, 0.05, 0.5, 3, 20, 90, 700]))
        now_ms, cost = int(clock.now() * 1000), rng.randint(1, 6)
        decision = limiter.hit(store, "op", provider=GMAIL, cost=cost)
        exact_room = all(
            in_window(now_ms, w.length_ms) + cost <= limits.for_window(w) for w in WINDOWS
        )
        # Coarse buckets may refuse up to one bucket early, never admit beyond the exact room.
        widened_room = all(
            in_window(now_ms, w.length_ms + w.bucket_ms) + cost <= limits.for_window(w)
            for w in WINDOWS
        )
        if decision.allowed:
            assert exact_room
            admitted.append((now_ms, cost))
        else:
            assert not widened_room
            assert decision.retry_after_s > 0
    # Then every window ending at any admission holds at most its limit
    for end, _ in admitted:
        for w in WINDOWS:
            assert in_window(end, w.length_ms) <= limits.for_window(w)
    assert len(admitted) > 100


def test_all_or_nothing_when_the_hour_is_full(redis_client: redis.Redis) -> None:
    # Given a minute with room but an hour that is full
    clock, store = ManualClock(START), _store()
    limiter = _limiter(redis_client, clock, RateLimits(10, 12, 100, 0))
    assert limiter.hit(store, "op", provider=GMAIL, cost=10).allowed
    clock.advance(120)
    # When a hit would fit the minute but not the hour
    decision = limiter.hit(store, "op", provider=GMAIL, cost=5)
    # Then it is refused, blamed on the hour, and no window consumed anything
    assert not decision.allowed and decision.reason == "hour"
    assert _used(limiter, store) == {"minute": 0, "hour": 10, "day": 10}
    assert limiter.hit(store, "op", provider=GMAIL, cost=2).allowed


def test_costs_and_exact_retry_after(redis_client: redis.Redis) -> None:
    # Given Gmail's per-operation costs and 100 units per minute
    clock, store = ManualClock(START), _store()
    limiter = _limiter(redis_client, clock, RateLimits(100, 10_000, 100_000, 0))
    for _ in range(4):
        assert limiter.hit(store, "messages.get", provider=GMAIL).cost == 20
    clock.advance(10)
    assert limiter.hit(store, "messages.list", provider=GMAIL).allowed  # 85 used
    clock.advance(5)
    # When another messages.get (20) needs 5 units more than are left
    decision = limiter.hit(store, "messages.get", provider=GMAIL)
    # Then the wait is exactly until the first hit leaves the minute
    assert not decision.allowed and decision.reason == "minute"
    assert decision.retry_after_s == pytest.approx(45.0)
    with pytest.raises(RateLimited) as refused:
        decision.raise_if_refused()
    assert refused.value.retry_after_s == pytest.approx(45.0)
    assert [w.used for w in decision.windows] == [85, 85, 85]
    clock.advance(44.999)
    assert not limiter.test(store, "messages.get", provider=GMAIL).allowed
    clock.advance(0.001)
    assert limiter.hit(store, "messages.get", provider=GMAIL).allowed


def test_hour_retry_after_rounds_up_to_the_bucket(redis_client: redis.Redis) -> None:
    clock, store = ManualClock(START), _store()
    limiter = _limiter(redis_client, clock, RateLimits(100, 3, 100, 0))
    for _ in range(3):
        assert limiter.hit(store, "op", provider=GMAIL, cost=1).allowed
    decision = limiter.hit(store, "op", provider=GMAIL, cost=1)
    assert decision.reason == "hour"
    # START is on a 10 s bucket boundary: the bucket leaves the hour after 3,600 s + 10 s - 1 ms
    assert decision.retry_after_s == pytest.approx((HOUR.length_ms + HOUR.bucket_ms - 1) / 1000)
    assert MINUTE.bucket_ms == 1


def test_throttle_from_one_worker_blocks_another(redis_client: redis.Redis) -> None:
    # Given two workers with their own Redis clients
    clock, store = ManualClock(START), _store()
    limits = RateLimits(1000, 10_000, 100_000, 0)
    worker_a = _limiter(redis_client, clock, limits)
    worker_b = _limiter(redis.Redis.from_url(os.environ["REDIS_URL"]), clock, limits)
    # When A is told Retry-After 7.5 s
    until = worker_a.throttle(store, 7.5, provider=GMAIL)
    # Then B is refused for exactly the rest of the block, and allowed after it
    assert until == pytest.approx(START + 7.5)
    clock.advance(2.5)
    decision = worker_b.hit(store, "op", provider=GMAIL)
    assert not decision.allowed and decision.reason == "throttled"
    assert decision.retry_after_s == pytest.approx(5.0)
    assert decision.throttled_until == pytest.approx(START + 7.5)
    clock.advance(5.0)
    assert worker_b.hit(store, "op", provider=GMAIL).allowed


def test_escalating_backoff_without_retry_after(redis_client: redis.Redis) -> None:
    clock, store = ManualClock(START), _store()
    limiter = _limiter(redis_client, clock, RateLimits(1000, 10_000, 100_000, 0))
    waits = []
    for _ in range(5):
        waits.append(limiter.throttle(store, None, provider=GMAIL) - clock.now())
        clock.advance(waits[-1])
    assert waits == pytest.approx([1, 2, 4, 8, 16])
    # After a quiet period the strikes start again
    clock.advance(601)
    assert limiter.throttle(store, None, provider=GMAIL) - clock.now() == pytest.approx(1)


def _hold_lease(store: str, now: float, ready: Any) -> None:
    limiter = RateLimiter(
        redis.Redis.from_url(os.environ["REDIS_URL"]),
        ManualClock(now),
        limits={GMAIL: RateLimits(1000, 10_000, 100_000, 1)},
        lease_ttl_s=30,
    )
    ready.put(limiter.hit(store, "op", provider=GMAIL).lease_id)
    time.sleep(60)


def test_a_killed_holders_lease_expires_after_its_ttl(redis_client: redis.Redis) -> None:
    # Given a worker process holding the only lease, then killed
    store, ctx = _store(), multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    holder = ctx.Process(target=_hold_lease, args=(store, START, ready))
    holder.start()
    assert ready.get(timeout=30)
    os.kill(holder.pid or 0, signal.SIGKILL)
    holder.join()
    clock = ManualClock(START + 1)
    limiter = _limiter(redis_client, clock, RateLimits(1000, 10_000, 100_000, 1), lease_ttl_s=30)
    # Then others are refused until its TTL has passed
    refused = limiter.hit(store, "op", provider=GMAIL)
    assert not refused.allowed and refused.reason == "concurrency"
    assert 0 < refused.retry_after_s <= 1.0
    clock.advance(29)
    granted = limiter.hit(store, "op", provider=GMAIL)
    assert granted.allowed and granted.lease_id
    # And a released lease frees its slot at once
    limiter.release(store, granted.lease_id, provider=GMAIL, success=True)
    assert limiter.hit(store, "op", provider=GMAIL).allowed


def _hammer(store: str, limit: int, attempts: int) -> int:
    limiter = RateLimiter(
        redis.Redis.from_url(os.environ["REDIS_URL"]),
        ManualClock(START),
        limits={GMAIL: RateLimits(limit, limit, limit, 0)},
    )
    return sum(limiter.hit(store, "op", provider=GMAIL, cost=1).allowed for _ in range(attempts))


def test_contention_admits_exactly_the_limit() -> None:
    # Given 8 processes hammering one fresh window of 500 with 1,200 attempts in all
    store, limit = _store(), 500
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        admitted = pool.starmap(_hammer, [(store, limit, 150)] * 8)
    # Then exactly the limit was admitted
    assert sum(admitted) == limit


def test_usage_is_mirrored_to_postgres(redis_client: redis.Redis, engine: Engine) -> None:
    # Given a real store with traffic, a refusal and a throttle
    with service_session(engine) as s:
        store = str(make_store(s, make_business(s), Provider.GMAIL).id)
    clock = ManualClock(time.time())
    limiter = _limiter(redis_client, clock, RateLimits(50, 1000, 10_000, 4))
    assert limiter.hit(store, "messages.get").allowed  # provider looked up from the store
    assert limiter.hit(store, "history.list", cost=25).allowed
    assert not limiter.hit(store, "messages.get").allowed
    limiter.throttle(store, 30)
    # When usage is flushed
    assert limiter.flush_usage_to_postgres(engine) >= 1
    # Then the seed's query shows it
    with engine.connect() as conn:
        row = (
            conn.execute(text(f"SELECT * FROM provider_rate_limits WHERE store_id = '{store}'"))
            .one()
            ._mapping
        )
    assert row["operation_type"] == "*" and row["provider"] == "gmail"
    assert (row["current_minute_usage"], row["current_hour_usage"]) == (45, 45)
    assert row["denied_count"] == 1
    assert row["throttled_until"].timestamp() == pytest.approx(clock.now() + 30, abs=0.01)
    assert row["usage_synced_at"] is not None and row["last_request_at"] is not None
    # And a second flush with no new activity visits nothing
    assert limiter.flush_usage_to_postgres(engine) == 0


def test_overrides_from_the_table_take_effect(redis_client: redis.Redis, engine: Engine) -> None:
    with service_session(engine) as s:
        store = make_store(s, make_business(s), Provider.OUTLOOK)
        s.execute(
            text(
                "INSERT INTO provider_rate_limits (store_id, provider, operation_type, "
                "requests_per_minute, concurrency_limit) VALUES (:id, 'outlook', '*', 3, 2)"
            ),
            {"id": store.id},
        )
    limiter = RateLimiter(redis_client, ManualClock(START))  # provider defaults: 900/min
    results = [limiter.hit(str(store.id), "delta") for _ in range(3)]
    assert [r.allowed for r in results] == [True, True, False]
    assert results[2].reason == "concurrency"
    for r in results[:2]:
        limiter.release(str(store.id), r.lease_id)
    assert limiter.hit(str(store.id), "delta").allowed
    decision = limiter.hit(str(store.id), "delta")
    assert not decision.allowed and decision.reason == "minute"
    assert decision.windows[0].limit == 3 and decision.windows[1].limit == 9_000


def test_record_rate_limit_request_releases_and_throttles(engine: Engine) -> None:
    with service_session(engine) as s:
        store = str(make_store(s, make_business(s), Provider.OUTLOOK).id)
    from safeguards.rate_limit.limiter import check_rate_limit

    clock = ManualClock(time.time())
    decision = check_rate_limit(store, "delta", clock=clock)
    assert decision.allowed and decision.lease_id and decision.provider == Provider.OUTLOOK
    assert decision.as_dict()["windows"][0]["name"] == "minute"
    record_rate_limit_request(
        store, False, lease_id=decision.lease_id, retry_after_s=2.5, throttled=True, clock=clock
    )
    refused = check_rate_limit(store, "delta", clock=clock)
    assert not refused.allowed and refused.retry_after_s == pytest.approx(2.5)


def test_unreachable_redis_raises_safeguard_unavailable() -> None:
    dead = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    limiter = _limiter(dead, ManualClock(START), RateLimits(10, 10, 10, 0))
    with pytest.raises(SafeguardUnavailable):
        limiter.hit(_store(), "op", provider=GMAIL)


def test_free_operations_take_no_window_room_and_purge_cleanly(redis_client: redis.Redis) -> None:
    """A cost-0 call (a token refresh) is admitted without spending; purging around it works."""
    clock = ManualClock(START)
    limiter = _limiter(redis_client, clock, RateLimits(100, 1000, 10_000, 0))
    store = _store()
    assert limiter.hit(store, "oauth.token", provider=GMAIL, cost=0).allowed
    clock.advance(61)  # the free call's minute has passed: a purge runs with nothing to free
    assert limiter.hit(store, "messages.get", provider=GMAIL, cost=20).allowed
    assert _used(limiter, store) == {"minute": 20, "hour": 20, "day": 20}
    clock.advance(2 * 86_400)
    assert limiter.hit(store, "oauth.token", provider=GMAIL, cost=0).allowed
    assert _used(limiter, store) == {"minute": 0, "hour": 0, "day": 0}
