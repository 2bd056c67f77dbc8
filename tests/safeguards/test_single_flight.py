"""Single flight with coalescing, on the real Redis and across processes."""

from __future__ import annotations

import multiprocessing
import time
import uuid

import redis

from safeguards.single_flight import SingleFlight, new_owner


def _flight(redis_client: redis.Redis, **kw: float) -> tuple[SingleFlight, str]:
    return SingleFlight("test-flight", redis_client, **kw), uuid.uuid4().hex


def test_a_burst_while_running_causes_exactly_one_follow_up(redis_client: redis.Redis) -> None:
    flight, scope = _flight(redis_client)
    assert flight.request(scope) is True  # idle: enqueue
    owner = new_owner()
    assert flight.acquire(scope, owner)
    assert [flight.request(scope) for _ in range(200)] == [False] * 200
    assert flight.release(scope, owner) is True  # one follow-up due
    follow = new_owner()
    assert flight.acquire(scope, follow)
    assert flight.release(scope, follow) is False  # nothing new: idle again
    assert flight.request(scope) is True


def test_requests_while_queued_fold_into_the_queued_run(redis_client: redis.Redis) -> None:
    flight, scope = _flight(redis_client)
    assert flight.request(scope) is True
    assert flight.request(scope) is False
    owner = new_owner()
    assert flight.acquire(scope, owner)  # the queued run covers what arrived before it started
    assert flight.release(scope, owner) is False


def test_a_cancelled_request_does_not_swallow_later_ones(redis_client: redis.Redis) -> None:
    flight, scope = _flight(redis_client)
    assert flight.request(scope) is True
    flight.cancel(scope)  # the broker refused the message
    assert flight.request(scope) is True


def test_a_second_runner_is_turned_away_and_leaves_a_follow_up(redis_client: redis.Redis) -> None:
    flight, scope = _flight(redis_client)
    first, second = new_owner(), new_owner()
    assert flight.acquire(scope, first)
    assert not flight.acquire(scope, second)
    assert flight.release(scope, first) is True


def test_a_crashed_holder_blocks_only_until_its_lease_expires(redis_client: redis.Redis) -> None:
    flight, scope = _flight(redis_client, lease_s=0.3)
    assert flight.acquire(scope, new_owner())  # and never releases
    assert not flight.acquire(scope, new_owner())
    time.sleep(0.4)
    survivor = new_owner()
    assert flight.acquire(scope, survivor)
    assert flight.renew(scope, survivor)


def _burst(url: str, prefix: str, scope: str, n: int, out: multiprocessing.Queue[int]) -> None:
    import os

    os.environ["SYNCGUARD_REDIS_PREFIX"] = prefix
    flight = SingleFlight("test-flight", redis.Redis.from_url(url))
    out.put(sum(flight.request(scope) for _ in range(n)))


def test_many_processes_requesting_at_once_enqueue_once(redis_client: redis.Redis) -> None:
    import os

    scope = uuid.uuid4().hex
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[int] = ctx.Queue()
    url, prefix = os.environ["REDIS_URL"], os.environ["SYNCGUARD_REDIS_PREFIX"]
    procs = [ctx.Process(target=_burst, args=(url, prefix, scope, 50, out)) for _ in range(6)]
    for p in procs:
        p.start()
    enqueued = sum(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(30)
    assert enqueued == 1
