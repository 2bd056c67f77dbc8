"""Single flight with coalescing, on the real Redis and across processes."""

from __future__ import annotations

import multiprocessing
import time
import uuid

import redis

from safeguards.single_flight import Claim, SingleFlight, new_owner


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


# --- continuations and the ledger (issue 11) -------------------------------------------------


def test_a_request_folded_into_a_continuing_run_survives_its_continuations(
    redis_client: redis.Redis,
) -> None:
    flight, scope = _flight(redis_client)
    job = new_owner()
    assert flight.request(scope, job)
    assert flight.acquire(scope, job)  # the first run starts: earlier requests are covered
    assert flight.request(scope) is False  # new mail arrives while the run is under way
    for _ in range(3):  # the run hands its worker back and continues, three times
        flight.requeue(scope, job, 0)
        assert flight.acquire(scope, job, resume=True)
        assert flight.renew(scope, job)
    follow_up = new_owner()
    assert flight.release(scope, job, follow_up) is True  # exactly one follow-up is due
    assert flight.holder(scope) == follow_up
    assert flight.request(scope) is False  # folded into the follow-up, which starts later
    assert flight.acquire(scope, follow_up)  # fresh: it covers every request so far
    assert flight.release(scope, follow_up) is False
    assert flight.holder(scope) is None


def test_a_retry_that_resumes_keeps_the_folded_request(redis_client: redis.Redis) -> None:
    flight, scope = _flight(redis_client)
    job = new_owner()
    assert flight.request(scope, job) and flight.acquire(scope, job)
    assert flight.request(scope) is False
    flight.requeue(scope, job, 0.05)  # a transient failure: retried after its countdown
    assert flight.acquire(scope, job, resume=True)
    assert flight.release(scope, job) is True


def test_the_pending_marker_names_its_run_and_lapses_after_the_queue_bound(
    redis_client: redis.Redis,
) -> None:
    flight, scope = _flight(redis_client, lease_s=0.1, pending_ttl_s=0.3)
    job = new_owner()
    assert flight.request(scope, job)
    assert flight.holder(scope) == job
    time.sleep(0.5)  # its message was lost: nothing ever started it
    assert flight.holder(scope) is None
    assert flight.request(scope, new_owner()) is True  # the store is not blocked any longer


def test_a_re_published_run_stays_pending_for_its_countdown(redis_client: redis.Redis) -> None:
    flight, scope = _flight(redis_client, lease_s=0.1, pending_ttl_s=0.3)
    job = new_owner()
    assert flight.request(scope, job)
    flight.requeue(scope, job, 1.0)  # deferred one second
    time.sleep(0.5)  # past the queue bound, within the countdown
    assert flight.request(scope) is False
    assert flight.holder(scope) == job
    time.sleep(1.0)  # past countdown plus bound: it never came back
    assert flight.request(scope, new_owner()) is True


def test_a_marker_whose_run_ended_is_taken_over_once(redis_client: redis.Redis) -> None:
    flight, scope = _flight(redis_client)
    ended, first, second = new_owner(), new_owner(), new_owner()
    assert flight.request(scope, ended)  # its worker died after the job succeeded
    assert flight.request(scope, first) is False
    assert flight.take_over(scope, ended, first) is True
    assert flight.take_over(scope, ended, second) is False  # a racing caller loses
    assert flight.holder(scope) == first
    assert flight.take_over(scope, None, second) is False  # "no marker" is not true either
    flight.cancel(scope, second)  # not its marker: left alone
    assert flight.holder(scope) == first
    flight.cancel(scope, first)
    assert flight.take_over(scope, None, second) is True


def test_a_run_whose_marker_was_taken_over_leaves_it_to_the_newer_run(
    redis_client: redis.Redis,
) -> None:
    flight, scope = _flight(redis_client)
    old, new = new_owner(), new_owner()
    assert flight.request(scope, old) and flight.acquire(scope, old)
    assert flight.request(scope) is False
    assert flight.take_over(scope, old, new)  # the ledger said old had ended
    assert flight.release(scope, old) is False  # the newer run covers the request
    assert flight.holder(scope) == new
    assert flight.acquire(scope, new) and flight.release(scope, new) is False


def test_a_turned_away_runner_points_the_marker_at_the_lease_holder(
    redis_client: redis.Redis,
) -> None:
    flight, scope = _flight(redis_client)
    running, late = new_owner(), new_owner()
    assert flight.acquire(scope, running)
    assert not flight.acquire(scope, late)
    assert flight.holder(scope) == running
    assert flight.release(scope, running) is True


def test_a_stale_execution_of_the_running_run_changes_nothing(redis_client: redis.Redis) -> None:
    flight, scope = _flight(redis_client)
    run = new_owner()
    current, stale = f"{run}/current", f"{run}/stale"
    assert flight.request(scope, run)
    assert flight.claim(scope, current) is Claim.HELD and flight.begin(scope, current)
    assert flight.request(scope) is False  # folded into the running run
    # The stale execution finds its sibling holding the lease: nothing changes, and it cannot
    # begin (clear the dirty flag) or renew without the lease.
    assert flight.claim(scope, stale) is Claim.SIBLING
    assert not flight.begin(scope, stale) and not flight.renew(scope, stale)
    flight.drop(scope, stale)  # not its lease: a no-op
    assert flight.renew(scope, current)
    assert flight.release(scope, run, "follow-up") is True  # the folded request's follow-up


def test_the_execution_the_ledger_names_takes_the_lease_from_a_sibling(
    redis_client: redis.Redis,
) -> None:
    flight, scope = _flight(redis_client)
    run, other = new_owner(), new_owner()
    assert flight.claim(scope, f"{run}/old") is Claim.HELD
    assert flight.take(scope, f"{run}/new")  # a sibling's lease
    assert not flight.renew(scope, f"{run}/old")
    assert flight.claim(scope, f"{other}/x") is Claim.BUSY  # another run is turned away
    assert not flight.take(scope, f"{other}/x")  # and cannot take it


def test_a_continuation_gets_the_lease_handed_over(redis_client: redis.Redis) -> None:
    flight, scope = _flight(redis_client)
    run = new_owner()
    assert flight.claim(scope, f"{run}/1") is Claim.HELD
    flight.requeue(scope, f"{run}/1", 0.0, f"{run}/2")
    assert flight.claim(scope, f"{run}/2") is Claim.HELD
    assert flight.holder(scope) == run  # the marker names the run, not the execution


def test_a_repeated_release_names_the_same_follow_up_once(redis_client: redis.Redis) -> None:
    flight, scope = _flight(redis_client)
    run = new_owner()
    assert flight.request(scope, run) and flight.acquire(scope, run)
    assert flight.request(scope) is False
    assert flight.release(scope, run, "follow-up") is True
    assert flight.release(scope, run, "follow-up") is True  # the caller failed and retries
    assert flight.release(scope, run, "another") is False  # never a second follow-up
    assert flight.holder(scope) == "follow-up"


def test_a_fold_outlives_a_lapsed_marker_until_its_run_releases(redis_client: redis.Redis) -> None:
    flight = SingleFlight(
        "test-flight", redis_client, lease_s=0.2, pending_ttl_s=0.2, dirty_ttl_s=30.0
    )
    scope, run = uuid.uuid4().hex, new_owner()
    assert flight.request(scope, run) and flight.acquire(scope, run)
    assert flight.request(scope) is False  # folded into the run
    time.sleep(0.5)  # the run's marker lapsed (a late sweep) while the run was still alive
    assert flight.holder(scope) is None
    assert flight.release(scope, run, "follow-up") is True  # the fold still gets its follow-up
