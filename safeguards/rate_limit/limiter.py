"""The distributed rate limiter: one atomic Redis decision per provider call, global to all hosts.

*What* is in ``safeguards.rate_limit.limits`` (windows, defaults, costs), *where* is
``check.lua`` beside this module (one round trip per decision; its reply is named in
``reply``), *how* is here.

Algorithm: the per-(provider, store) quota is shared by every operation (Gmail's per-user
units), so each operation spends its cost from three sliding windows (minute, hour, day) that
are checked and consumed together, all or nothing, with the throttle and the concurrency
leases in the same script. We chose exact accounting over the popular sliding-window counter,
which interpolates two fixed windows and can admit more than the limit: the minute window is
an exact sliding log (1 ms buckets), hour and day use coarse buckets counted whole while they
overlap the window, which can only refuse a little early, never admit too much. The proof of
"no window of its length ever holds more than its limit" is in ``limits``. Memory
is O(limit) for the minute and at most 360 + 288 buckets for hour and day.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from sqlalchemy import Engine

from models.enums import Provider
from safeguards.clock import SYSTEM_CLOCK, Clock
from safeguards.errors import SafeguardUnavailable
from safeguards.hot_script import evalsha
from safeguards.rate_limit import reply
from safeguards.rate_limit.limits import (
    PROVIDER_COSTS,
    PROVIDER_LIMITS,
    THROTTLE_BASE_S,
    THROTTLE_CAP_S,
    THROTTLE_QUIET_S,
    WINDOWS,
    LimitOverrides,
    OperationCost,
    RateLimitDecision,
    RateLimits,
    RateLimitUsage,
    WindowUsage,
)
from safeguards.rate_limit.store import StoreLimitSource, upsert_usage
from safeguards.redis_state import LuaScript, get_redis, key, run_script, run_script_batch
from syncguard.settings import get_settings

__all__ = [
    "PendingDecision",
    "RateLimitDecision",
    "RateLimitUsage",
    "RateLimiter",
    "StoreLimitSource",
    "WindowUsage",
    "check_rate_limit",
    "flush_usage_to_postgres",
    "get_rate_limiter",
    "record_rate_limit_request",
]

#: Seconds a concurrency lease lives when its holder never releases it (a killed worker).
LEASE_TTL_S = 60.0
#: Longest wait, seconds, suggested to a call refused only for want of a lease slot.
CONCURRENCY_WAIT_S = 1.0
#: Seconds a store stays marked "touched" without a flush before it is announced again.
DIRTY_TTL_S = 30.0
#: Stores whose keys and limits one limiter keeps ready (the cache starts over when full).
KEY_CACHE_SIZE = 10_000
#: Most stores one flush to PostgreSQL visits (one pipelined round trip, one upsert): small
#: enough that the mirror's budget is checked about every 0.1 s.
FLUSH_BATCH = 1_000

_KIND = "ratelimit"
#: The decision, the lease release and the throttle strike, each one round trip.
CHECK = LuaScript("safeguards.rate_limit", "check")
RELEASE = LuaScript("safeguards.rate_limit", "release")
THROTTLE = LuaScript("safeguards.rate_limit", "throttle")


@dataclass(frozen=True)
class PendingDecision:
    """A decision's script inputs and what its reply is read against."""

    keys: list[str]
    args: list[Any]
    provider: Provider
    sid: str
    operation_type: str
    units: int
    limits: RateLimits
    lease: str


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class RateLimiter:
    """The limiter's verbs (``hit``, ``test``, ``release``, ``throttle``, ``usage``) on Redis."""

    def __init__(
        self,
        client: redis.Redis | None = None,
        clock: Clock = SYSTEM_CLOCK,
        *,
        limits: Mapping[Provider, RateLimits] = PROVIDER_LIMITS,
        costs: Mapping[Provider, OperationCost] = PROVIDER_COSTS,
        stores: StoreLimitSource | None = None,
        lease_ttl_s: float = LEASE_TTL_S,
    ) -> None:
        self.client = client if client is not None else get_redis()
        self.clock = clock
        self.limits = limits
        self.costs = costs
        self.stores = stores if stores is not None else _STORES
        self.lease_ttl_s = lease_ttl_s
        # Per-call work done once: keys per store, encoded limits, limits per store.
        self._key_cache: dict[tuple[str, Provider, str], list[str]] = {}
        self._static_args: dict[RateLimits, list[Any]] = {}
        self._limits_cache: dict[tuple[Provider, str], tuple[LimitOverrides, RateLimits]] = {}

    def limits_for(self, provider: Provider, store_id: str) -> RateLimits:
        """The provider's defaults with the store's overrides applied."""
        overrides = self.stores.overrides(store_id)
        cached = self._limits_cache.get((provider, store_id))
        # The source hands back the same overrides object until its cache entry is reloaded.
        if cached is not None and cached[0] is overrides:
            return cached[1]
        limits = self.limits[provider].with_overrides(overrides)
        if len(self._limits_cache) >= KEY_CACHE_SIZE:
            self._limits_cache.clear()
        self._limits_cache[(provider, store_id)] = (overrides, limits)
        return limits

    def hit(
        self,
        store_id: str,
        operation_type: str,
        *,
        provider: Provider | None = None,
        cost: int | None = None,
    ) -> RateLimitDecision:
        """Consume the operation's cost and a lease if every window has room; else nothing."""
        return self._decide("hit", str(store_id), operation_type, provider, cost)

    def test(
        self,
        store_id: str,
        operation_type: str,
        *,
        provider: Provider | None = None,
        cost: int | None = None,
    ) -> RateLimitDecision:
        """Whether ``hit`` would be allowed now, consuming nothing."""
        return self._decide("test", str(store_id), operation_type, provider, cost)

    def release(
        self,
        store_id: str,
        lease_id: str | None,
        *,
        provider: Provider | None = None,
        success: bool | None = None,
    ) -> None:
        """Give back a lease (if any) and count the call's outcome (if known)."""
        prov = provider or self.stores.provider(str(store_id))
        run_script(self.client, RELEASE, *self.release_call(store_id, lease_id, prov, success))

    def throttle(
        self, store_id: str, retry_after_s: float | None, *, provider: Provider | None = None
    ) -> float:
        """Block the store for every worker; returns the epoch second the block ends."""
        sid = str(store_id)
        prov = provider or self.stores.provider(sid)
        keys = [self._key(prov, sid, n) for n in ("throttle", "stats")]
        args = [
            _ms(self.clock.now()),
            -1 if retry_after_s is None else _ms(retry_after_s),
            _ms(THROTTLE_BASE_S),
            _ms(THROTTLE_CAP_S),
            _ms(THROTTLE_QUIET_S),
            _ms(DIRTY_TTL_S),
        ]
        throttled = reply.decode_throttle(run_script(self.client, THROTTLE, keys, args))
        self._announce(prov, sid, throttled.first_touch)
        return throttled.blocked_until_ms / 1000

    def usage(self, store_id: str, *, provider: Provider | None = None) -> RateLimitUsage:
        """The store's live usage: windows, throttle, leases, counters."""
        sid = str(store_id)
        prov = provider or self.stores.provider(sid)
        limits = self.limits_for(prov, sid)
        raw = run_script(self.client, CHECK, *self._call("peek", prov, sid, 0, limits))
        return reply.usage(sid, prov, limits, reply.decode_check(raw))

    def flush_usage_to_postgres(self, engine: Engine | None = None) -> int:
        """Upsert the usage of every store touched since the last flush; returns rows written."""
        touched = self._redis(lambda: self.client.spop(self._touched_key(), FLUSH_BATCH))
        members = [m.decode() for m in touched or []]
        rows = self._flush_rows(members)
        try:
            return upsert_usage(rows, engine)
        except Exception:
            # Put the stores back so the next flush retries them; the error still propagates.
            if members:
                self.client.sadd(self._touched_key(), *members)
            raise

    def _flush_rows(self, members: list[str]) -> list[dict[str, Any]]:
        stores = [(Provider(p), s) for p, _, s in (m.partition("|") for m in members)]
        calls = [self._call("flush", prov, sid, 0, self.limits[prov]) for prov, sid in stores]
        results = run_script_batch(self.client, CHECK, calls)  # one pipeline per Cluster node
        return [
            reply.flush_row(sid, reply.decode_check(raw))
            for (_, sid), raw in zip(stores, results, strict=True)
        ]

    def _decide(
        self, mode: str, sid: str, operation_type: str, provider: Provider | None, cost: int | None
    ) -> RateLimitDecision:
        pending = self.prepare(mode, sid, operation_type, provider, cost)
        return self.finish(pending, evalsha(self.client, CHECK, pending.keys, pending.args))

    def prepare(
        self,
        mode: str,
        sid: str,
        operation_type: str,
        provider: Provider | None,
        cost: int | None,
        *,
        settled: int = 0,
        released: Sequence[str] = (),
    ) -> PendingDecision:
        """One ``hit`` or ``test`` made ready to run (by CHECK, or a script including it).

        ``settled`` successes and ``released`` leases of earlier calls (deferred by the guard)
        are counted and given back in the same run, before the decision.
        """
        prov = provider or self.stores.provider(sid)
        units = self.costs[prov].of(operation_type) if cost is None else cost
        limits = self.limits_for(prov, sid)
        lease = uuid.uuid4().hex if mode == "hit" and limits.concurrency > 0 else ""
        keys, args = self._call(mode, prov, sid, units, limits, lease)
        if settled or released:
            args = [*args, settled, *released]
        return PendingDecision(keys, args, prov, sid, operation_type, units, limits, lease)

    def finish(self, pending: PendingDecision, raw: list[Any]) -> RateLimitDecision:
        """The decision from CHECK's reply (announcing a store touched for the first time)."""
        decided = reply.decode_check(raw)
        self._announce(pending.provider, pending.sid, decided.first_touch)
        lease = pending.lease
        return RateLimitDecision(
            allowed=decided.allowed,
            retry_after_s=decided.retry_after_ms / 1000,
            reason=decided.reason,
            windows=reply.windows(pending.limits, decided),
            throttled_until=reply.throttled_until(decided),
            lease_id=lease if decided.allowed and lease else None,
            store_id=pending.sid,
            provider=pending.provider,
            operation_type=pending.operation_type,
            cost=pending.units,
        )

    def release_call(
        self, store_id: str, lease_id: str | None, provider: Provider, success: bool | None
    ) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of ``release`` (for a script including RELEASE)."""
        outcome = "" if success is None else ("success" if success else "failure")
        sid = str(store_id)
        keys = [self._key(provider, sid, "leases"), self._key(provider, sid, "stats")]
        return keys, [lease_id or "", outcome]

    def _call(
        self, mode: str, prov: Provider, sid: str, cost: int, limits: RateLimits, lease: str = ""
    ) -> tuple[list[str], list[Any]]:
        keys = self._keys(prov, sid)
        static = self._static_args.get(limits)
        if static is None:  # limits are few (defaults and overrides): encoded once each
            static = [_ms(self.lease_ttl_s), limits.concurrency, _ms(DIRTY_TTL_S)]
            for w in WINDOWS:
                static += [w.length_ms, w.bucket_ms, limits.for_window(w)]
            static.append(_ms(CONCURRENCY_WAIT_S))
            self._static_args[limits] = static
        return keys, [mode, _ms(self.clock.now()), cost, lease, *static]

    def _keys(self, prov: Provider, sid: str) -> list[str]:
        """CHECK's KEYS: each window's log or buckets, then leases, throttle, stats."""
        prefix = get_settings().redis_prefix
        found = self._key_cache.get((prefix, prov, sid))
        if found is None:
            # A window of 1 ms buckets is a list ("log"), the others hashes ("buckets").
            found = [
                self._key(prov, sid, w.name, "log" if w.bucket_ms == 1 else "buckets")
                for w in WINDOWS
            ]
            found += [self._key(prov, sid, n) for n in ("leases", "throttle", "stats")]
            if len(self._key_cache) >= KEY_CACHE_SIZE:
                self._key_cache.clear()
            self._key_cache[(prefix, prov, sid)] = found
        return found

    def _announce(self, prov: Provider, sid: str, first_touch: bool) -> None:
        # Only the first touch since a flush pays this second round trip.
        if first_touch:
            self._redis(lambda: self.client.sadd(self._touched_key(), f"{prov.value}|{sid}"))

    def _redis(self, call: Any) -> Any:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise SafeguardUnavailable(f"safeguard state unreachable: {exc}") from exc

    def _key(self, prov: Provider, sid: str, *parts: str) -> str:
        return key(_KIND, sid, prov.value, *parts)

    def _touched_key(self) -> str:
        return key(_KIND, "touched")


_STORES = StoreLimitSource()
_DEFAULT: list[RateLimiter] = []


def get_rate_limiter(clock: Clock = SYSTEM_CLOCK) -> RateLimiter:
    """The process's limiter on the safeguards' Redis (a cheap new one for another clock)."""
    if clock is not SYSTEM_CLOCK:
        return RateLimiter(get_redis(), clock)
    if not _DEFAULT:
        _DEFAULT.append(RateLimiter(get_redis()))
    return _DEFAULT[0]


def check_rate_limit(
    store_id: str | uuid.UUID,
    operation_type: str,
    *,
    provider: Provider | None = None,
    cost: int | None = None,
    consume: bool = True,
    clock: Clock = SYSTEM_CLOCK,
) -> RateLimitDecision:
    """Decide (and by default consume) one call of ``operation_type`` for the store."""
    limiter = get_rate_limiter(clock)
    verb = limiter.hit if consume else limiter.test
    return verb(str(store_id), operation_type, provider=provider, cost=cost)


def record_rate_limit_request(
    store_id: str | uuid.UUID,
    success: bool,
    *,
    provider: Provider | None = None,
    lease_id: str | None = None,
    retry_after_s: float | None = None,
    throttled: bool = False,
    clock: Clock = SYSTEM_CLOCK,
) -> None:
    """Release the call's lease, count its outcome, and apply a provider throttle if any."""
    limiter = get_rate_limiter(clock)
    limiter.release(str(store_id), lease_id, provider=provider, success=success)
    if throttled:
        limiter.throttle(str(store_id), retry_after_s, provider=provider)


def flush_usage_to_postgres(engine: Engine | None = None) -> int:
    """Mirror the live usage of every store touched since the last flush into PostgreSQL."""
    return get_rate_limiter().flush_usage_to_postgres(engine)
