"""Rate-limit decisions per second against peers on the same Redis: ``python -m bench.rate_limit``.

Peers, all on one Redis, one process, sequential calls (latency-bound, as a worker is):
- ``INCR`` — one plain round trip: the floor any distributed limiter pays;
- ``limits`` (the library style.md holds up) moving window, one window per hit;
- ``limits`` moving window x3 — minute, hour and day checked one after another, three round trips
  and not atomic (a crash between them leaves the windows inconsistent);
- syncguard ``RateLimiter.hit`` — minute, hour and day windows and the throttle, checked and
  consumed all or nothing in one Lua call.
Prints decisions/s and the ratio to ``INCR``. Uses REDIS_URL (default: the embedded Redis).
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable

import redis
from limits import RateLimitItemPerDay, RateLimitItemPerHour, RateLimitItemPerMinute
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from bench.harness import Benchmark, Pair
from models import Provider
from safeguards.rate_limit.limiter import RateLimiter
from safeguards.rate_limit.limits import RateLimits
from safeguards.redis_state import get_redis
from syncguard.services import ensure_services
from syncguard.settings import get_settings

#: Limits high enough that every call is admitted: the bench measures the decision, not refusals.
BIG = 10**9


class _NoStoreOverrides:
    """Bench stores live only in Redis: no database lookups."""

    def provider(self, store_id: str) -> Provider:
        return Provider.GMAIL

    def overrides(self, store_id: str) -> object:
        from safeguards.rate_limit.limits import LimitOverrides

        return LimitOverrides()


def _rate(call: Callable[[], object], n: int) -> float:
    for _ in range(min(200, n)):  # warm up: scripts loaded, connections open
        call()
    started = time.perf_counter()
    for _ in range(n):
        call()
    return n / (time.perf_counter() - started)


def _contestants(calls: int) -> tuple[dict[str, Callable[[], object]], Callable[[], None]]:
    url = ensure_services(get_settings()).redis_url
    client: redis.Redis = get_redis(url)
    key = f"{get_settings().redis_prefix}bench:{uuid.uuid4().hex}"
    moving = MovingWindowRateLimiter(RedisStorage(url))
    windows = [RateLimitItemPerMinute(BIG), RateLimitItemPerHour(BIG), RateLimitItemPerDay(BIG)]
    ours = RateLimiter(
        client,
        limits={p: RateLimits(BIG, BIG, BIG, 0) for p in Provider},
        stores=_NoStoreOverrides(),  # type: ignore[arg-type]
    )
    store = str(uuid.uuid4())
    calls_by_name: dict[str, Callable[[], object]] = {
        "redis INCR (floor)": lambda: client.incr(key),
        "limits moving window, 1 window": lambda: moving.hit(windows[0], key),
        "limits moving window, 3 windows": lambda: [moving.hit(w, key) for w in windows],
        "syncguard hit, 3 windows atomic": lambda: ours.hit(
            store, "messages.list", provider=Provider.GMAIL
        ),
    }
    return calls_by_name, lambda: client.delete(key)


def _setup(quick: bool) -> Pair:
    calls = 1_000 if quick else 4_000
    contestants, close = _contestants(calls)
    pair = Pair(
        ours=lambda: _rate(contestants["syncguard hit, 3 windows atomic"], calls),
        peer=lambda: _rate(contestants["limits moving window, 3 windows"], calls),
        close=close,
    )
    pair.notes["redis INCR floor/s"] = f"{_rate(contestants['redis INCR (floor)'], calls):,.0f}"
    return pair


#: Goal 4 of issue 12: at least twice ``limits`` doing the same three windows, exact and atomic.
BENCHMARKS = [
    Benchmark(
        name="3-window rate-limit decisions",
        unit="decisions/s",
        peer_name="limits moving window x3",
        goal=2.0,
        setup=_setup,
    )
]


def main() -> None:
    """Measure each contestant once and print the table (``python -m bench.rate_limit``)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=5_000)
    args = parser.parse_args()
    contestants, close = _contestants(args.calls)
    rates = {name: _rate(call, args.calls) for name, call in contestants.items()}
    floor = rates["redis INCR (floor)"]
    print(f"{'peer':36} {'decisions/s':>12} {'vs INCR':>8}")
    for name, rate in rates.items():
        print(f"{name:36} {rate:12,.0f} {rate / floor:8.2f}")
    close()


if __name__ == "__main__":
    main()
