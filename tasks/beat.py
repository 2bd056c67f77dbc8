"""A Beat scheduler that runs each entry once per period even when two Beats run by mistake.

Why our own and not celery-redbeat: redbeat holds one global lock, so a second Beat idles;
that is fine, but it replaces the schedule's storage with its own (entries in Redis, edited
through its API) and adds a package. A per-entry claim keeps the stock ``PersistentScheduler``,
``beat_schedule.py`` as the one source of the schedule, and is one small Lua script.

Before publishing an entry, a Beat atomically claims "entry X ran at T" in Redis
(``tasks/periodic_claim.lua``): the claim succeeds only when the entry's last claimed
run is older than ``beat_claim_fraction`` of its period (the interval of ``schedule`` /
timedelta entries, ``beat_crontab_granularity_s`` for crontab and solar ones). Keying on the last
run rather than on ``floor(now / period)`` keeps two Beats whose phases straddle a period
boundary from both running. The losing Beat skips the run and logs it at debug level.

If Redis is unreachable the entry is published anyway, with a warning: a missed subscription
renewal costs more than a duplicate run, and every periodic job is idempotent. If publishing
fails after a claim, the claim is released so another Beat can still run the period.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery.beat import PersistentScheduler, ScheduleEntry
from celery.schedules import schedule as interval_schedule

from safeguards.clock import SYSTEM_CLOCK, Clock
from safeguards.errors import SafeguardUnavailable
from safeguards.redis_state import LuaScript, get_redis, key, run_script
from syncguard.settings import get_settings
from tasks.routine_logs import install_routine_run_filter

log = logging.getLogger(__name__)
# Beat loads this scheduler, not the task modules: the quiet-upkeep filter is installed here.
install_routine_run_filter()

#: Key kind of the per-entry "last claimed run" (``<prefix>beat:{entry}:last_run``).
CLAIM_KIND = "beat"
#: A claim's key outlives its entry's period by this factor (a lost key only allows one run).
CLAIM_TTL_PERIODS = 3
#: Shortest lifetime of a claim's key, seconds.
MIN_CLAIM_TTL_S = 60.0
#: The Lua script (``periodic_claim.lua``, beside this module) deciding claims.
CLAIM_SCRIPT = LuaScript("tasks", "periodic_claim")


def entry_period_s(schedule: Any) -> float:
    """The period two Beats deduplicate an entry's runs over, seconds."""
    if isinstance(schedule, interval_schedule):
        return float(schedule.run_every.total_seconds())
    # crontab and solar fire at most once a minute, at wall-clock moments both Beats share.
    return get_settings().beat_crontab_granularity_s


def _claim_key(entry_name: str) -> str:
    return key(CLAIM_KIND, entry_name, "last_run")


def claim_run(client: redis.Redis, entry_name: str, period_s: float, now_s: float) -> int | None:
    """Claim the run of ``entry_name`` at ``now_s``: the claim's ms, or None if already run."""
    now_ms = int(now_s * 1000)
    min_gap_ms = int(period_s * get_settings().beat_claim_fraction * 1000)
    ttl_ms = int(max(period_s * CLAIM_TTL_PERIODS, MIN_CLAIM_TTL_S) * 1000)
    args = ["claim", now_ms, min_gap_ms, ttl_ms]
    claimed = run_script(client, CLAIM_SCRIPT, [_claim_key(entry_name)], args)
    return now_ms if int(claimed) == 1 else None


def release_run(client: redis.Redis, entry_name: str, claimed_ms: int) -> bool:
    """Undo the claim taken at ``claimed_ms`` (if still the latest); True when it was undone."""
    released = run_script(client, CLAIM_SCRIPT, [_claim_key(entry_name)], ["release", claimed_ms])
    return int(released) == 1


class DedupingScheduler(PersistentScheduler):  # type: ignore[misc]
    """``PersistentScheduler`` that publishes an entry only when it wins the period's claim."""

    #: The clock claims are stamped with (hosts are NTP-synchronised).
    clock: Clock = SYSTEM_CLOCK

    def apply_entry(self, entry: ScheduleEntry, producer: Any = None) -> None:
        """Publish ``entry`` unless another Beat already ran it this period."""
        client = self.claim_client()
        period_s = entry_period_s(entry.schedule)
        try:
            claimed_ms = claim_run(client, entry.name, period_s, self.clock.now())
        except (SafeguardUnavailable, redis.RedisError) as exc:
            # A missed renewal costs more than a duplicate run of an idempotent job.
            log.warning("beat: %s: claim store failed, publishing anyway: %s", entry.name, exc)
            self._publish(entry, producer)
            return
        if claimed_ms is None:
            log.debug("beat: %s already ran this period (another Beat); skipped", entry.name)
            return
        if not self._publish(entry, producer):
            self._release(client, entry.name, claimed_ms)

    def claim_client(self) -> redis.Redis:
        """The Redis that holds the claims: the safeguards' (keys under the configured prefix)."""
        return get_redis()

    def _publish(self, entry: ScheduleEntry, producer: Any) -> bool:
        # Like Scheduler.apply_entry, an error is logged and Beat goes on; the caller must know.
        log.info("Scheduler: Sending due task %s (%s)", entry.name, entry.task)
        try:
            result = self.apply_async(entry, producer=producer, advance=False)
        except Exception:
            log.exception("beat: could not publish %s", entry.name)
            return False
        log.debug("%s sent. id->%s", entry.task, getattr(result, "id", None))
        return True

    def _release(self, client: redis.Redis, entry_name: str, claimed_ms: int) -> None:
        try:
            release_run(client, entry_name, claimed_ms)
        except (SafeguardUnavailable, redis.RedisError) as exc:
            log.warning("beat: %s: claim not released (the other Beat waits): %s", entry_name, exc)
