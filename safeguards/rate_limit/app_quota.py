"""Quota shared by every store of one provider app, leased to workers in blocks.

Why leases: a store's limiter keys live under the store's hash tag and the app's under the
app's, so on Redis Cluster no one script can check both. Instead each worker process leases a
block of the app's units (``app_quota.lua``, one round trip on the app's slot), spends it in
process for the calls it admits, and gives back what it did not spend with its next lease. The
common call costs no round trip at all; a worker asks Redis once per ``block`` units.

Algorithm. Redis keeps a bucketed sliding log of *grants* (``limits`` explains the buckets). A
block granted at time g may be spent only in [g, g + V] (V = ``validity_ms``), so the script
counts a grant for W + V instead of the provider's window W, and grants only while the live
grants plus the request fit in ``limit``.

Guarantee: no window of length W, anywhere in time, holds more than ``limit`` spent units.
Proof: take a window (s - W, s] and the units spent in it. Each was granted at some g with
s - W - V < g <= s (spent at x in (s - W, s] and g <= x <= g + V). Let g* be the last of these
grants. Every other one came earlier, inside (g* - W - V, g*], whose buckets were all counted
when g* was granted, and that grant required count + granted <= limit. Units given back are
units never spent, so removing them from the count keeps the argument. This holds in the
callers' shared clock; hosts differ by their NTP skew, which the proof adds to V.

Error bound (the other direction: units refused that the provider would have allowed): units
leased but not yet spent, at most ``block`` - 1 per worker process per app, are counted until
they are given back (the process's next lease) or age out (W + V after the grant); V makes the
count span W + V, i.e. a steady flow gets ``limit`` per W + V. Nothing is ever admitted over.
When the app's quota is spent the call is refused like a store limit (RateLimited, deferred by
the task, never a circuit failure), and the process remembers the refusal until its
retry-after, so a refused app costs no round trip either (a smaller call still asks).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from safeguards.clock import SYSTEM_CLOCK, Clock
from safeguards.rate_limit.app_limits import AppDecision, AppId, AppQuota, AppUsage, quota_for
from safeguards.redis_state import LuaScript, get_redis, key, run_script, run_script_batch
from syncguard.settings import get_settings

__all__ = ["LEASE", "AppQuotaPool", "get_app_quota_pool", "give_back_leases", "settings_quota"]

log = logging.getLogger(__name__)

LEASE = LuaScript("safeguards.rate_limit", "app_quota")
#: Seconds the registry of apps (what the dashboard lists) lives without a registration.
REGISTRY_TTL_S = 86_400
#: Seconds between one process's registrations of an app it keeps leasing from.
REGISTER_EVERY_S = 3_600.0
_KIND = "appquota"


def settings_quota(app: AppId) -> AppQuota:
    """The app's quota from the settings (``SYNCGUARD_APP_QUOTA_LIMITS`` / ``_BLOCKS``)."""
    settings = get_settings()
    return quota_for(app, settings.app_quota_limits, settings.app_quota_blocks)


@dataclass
class _Block:
    """Units this process leased and has not spent: bucket ``idx``, spendable until ``until_s``."""

    idx: int
    units: int
    until_s: float


class AppQuotaPool:
    """One process's leased blocks of app quota (thread-safe); see the module docstring."""

    def __init__(
        self,
        client: redis.Redis | None = None,
        clock: Clock = SYSTEM_CLOCK,
        quota_of: Callable[[AppId], AppQuota] = settings_quota,
    ) -> None:
        self.client = client if client is not None else get_redis()
        self.clock = clock
        self.quota_of = quota_of
        self._lock = threading.Lock()
        self._blocks: dict[AppId, _Block] = {}
        #: The last refusal of each app: until when, for calls of how many units or more.
        self._refused: dict[AppId, tuple[float, int]] = {}
        self._registered: dict[AppId, float] = {}  # app -> when last registered (monotonic)

    def take(self, app: AppId, units: int) -> AppDecision:
        """Spend ``units`` of the app's quota for one call, leasing a new block when needed.

        Raises SafeguardUnavailable when the lease's round trip cannot reach Redis.
        """
        quota = self.quota_of(app)
        if not quota.enabled or units <= 0:
            return AppDecision(True, 0.0, None, 0, round_trip=False)
        with self._lock:
            now = self.clock.now()
            block = self._blocks.get(app)
            if block is not None and now <= block.until_s and block.units >= units:
                block.units -= units
                return AppDecision(True, 0.0, None, units, round_trip=False, bucket=block.idx)
            until, refused_units = self._refused.get(app, (0.0, 0))
            if now < until and units >= refused_units:  # a smaller call may still fit
                return AppDecision(False, until - now, "app_quota", units, round_trip=False)
            return self._lease(app, quota, units, now, block)

    def give_back(self, app: AppId, decision: AppDecision) -> None:
        """Return the units of an allowed ``decision`` whose call never happened.

        Only into a block of the same grant bucket: a unit must be spent within V of its
        bucket (the guarantee's proof); otherwise it stays counted until it ages out.
        """
        with self._lock:
            block = self._blocks.get(app)
            if block is not None and decision.units > 0 and block.idx == decision.bucket:
                block.units += decision.units

    def return_all(self) -> int:
        """Give every unspent leased unit back to Redis (process exit); returns units given."""
        with self._lock:
            blocks, self._blocks = self._blocks, {}
        given = 0
        for app, block in blocks.items():
            if block.units > 0:
                self._run(app, self.quota_of(app), "peek", 0, 0, block)
                given += block.units
        return given

    def held(self, app: AppId) -> int:
        """Units this process holds leased for ``app`` (spendable or not)."""
        with self._lock:
            block = self._blocks.get(app)
            return block.units if block is not None else 0

    def usage(self, app: AppId) -> AppUsage:
        """The app's live usage as Redis holds it now (one round trip)."""
        return _usage(app, self._run(app, self.quota_of(app), "peek", 0, 0, None))

    def usages(self) -> list[AppUsage]:
        """Every app any worker leased from in the last day, in name order (2 round trips)."""
        members = self.client.smembers(self._registry())
        apps = sorted(AppId.parse(_text(m) or "") for m in members)
        calls = [self._call(app, self.quota_of(app), "peek", 0, 0, None) for app in apps]
        # One pipeline per Redis Cluster node (a cluster pipeline refuses EVALSHA).
        replies = run_script_batch(self.client, LEASE, calls)
        return [_usage(app, raw) for app, raw in zip(apps, replies, strict=True)]

    def _lease(
        self, app: AppId, quota: AppQuota, units: int, now: float, old: _Block | None
    ) -> AppDecision:
        # The old block goes back with this lease: forgotten first, so a lease that fails
        # midway (units returned, reply lost) can only strand units, never spend them twice.
        self._blocks.pop(app, None)
        raw = self._run(app, quota, "grant", max(units, quota.block), units, old)
        granted, idx, wait_ms, reason = int(raw[0]), int(raw[1]), int(raw[3]), _text(raw[4])
        self._register(app)
        if granted == 0:
            self._refused[app] = (now + wait_ms / 1000, units)
            return AppDecision(False, wait_ms / 1000, reason, units, round_trip=True)
        # Spendable until V after the caller's clock at the request: never past the script's
        # effective grant time + V, which is what the guarantee needs.
        self._blocks[app] = _Block(idx, granted - units, now + quota.validity_ms / 1000)
        return AppDecision(True, 0.0, None, units, round_trip=True, bucket=idx)

    def _run(
        self, app: AppId, quota: AppQuota, mode: str, want: int, need: int, back: _Block | None
    ) -> list[Any]:
        return list(run_script(self.client, LEASE, *self._call(app, quota, mode, want, need, back)))

    def _call(
        self, app: AppId, quota: AppQuota, mode: str, want: int, need: int, back: _Block | None
    ) -> tuple[list[str], list[Any]]:
        keys = [key(_KIND, app.tag, part) for part in ("z", "h", "stats")]
        args = [
            mode,
            self._ms(),
            want,
            need,
            quota.limit,
            quota.window_ms,
            quota.validity_ms,
            quota.bucket_ms,
            back.idx if back is not None else -1,
            back.units if back is not None else 0,
        ]
        return keys, args

    def _register(self, app: AppId) -> None:
        # Once an hour per process and app, one round trip: the dashboard and /metrics list
        # apps from this set (its own Cluster slot, hence not in the script); it lives a day.
        now = time.monotonic()
        if self._registered.get(app, -REGISTER_EVERY_S) + REGISTER_EVERY_S <= now:
            pipe = self.client.pipeline(transaction=False)
            pipe.sadd(self._registry(), app.name)
            pipe.expire(self._registry(), REGISTRY_TTL_S)
            try:
                pipe.execute()
            except redis.RedisError:  # only the listing misses it: tried again next lease
                log.warning("app %s not registered for the dashboard", app.name, exc_info=True)
                return
            self._registered[app] = now

    def _registry(self) -> str:
        return key(_KIND, "registry")

    def _ms(self) -> int:
        return int(self.clock.now() * 1000)


def _text(value: Any) -> str | None:
    text = value.decode() if isinstance(value, bytes) else str(value)
    return text or None


def _usage(app: AppId, raw: list[Any]) -> AppUsage:
    return AppUsage(
        app=app.name,
        provider=app.provider.value,
        limit=int(raw[9]),
        window_s=int(raw[10]) / 1000,
        used=int(raw[5]),
        granted_total=int(raw[6]),
        returned_total=int(raw[7]),
        refused_total=int(raw[8]),
    )


_DEFAULT: list[AppQuotaPool] = []


def get_app_quota_pool() -> AppQuotaPool:
    """The process's pool on the safeguards' Redis; its blocks go back to Redis at exit."""
    if not _DEFAULT:
        pool = AppQuotaPool(get_redis())
        _DEFAULT.append(pool)
        atexit.register(_return_quietly, pool)
    return _DEFAULT[0]


def _return_quietly(pool: AppQuotaPool) -> None:
    try:
        pool.return_all()
    except Exception:  # exiting: a block not given back only ages out (W + V after its grant)
        return


def give_back_leases() -> None:
    """Give this process's unspent leased units back (a worker process shutting down)."""
    if _DEFAULT:
        _return_quietly(_DEFAULT[0])
