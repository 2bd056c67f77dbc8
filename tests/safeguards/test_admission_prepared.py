"""The guard's prepared admission (keys and unchanging arguments built once per scope and
operation) follows a store's limits when they change, and a new limiter when one is installed.

Real Redis; the guard runs against a limiter whose store overrides the test changes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from models import Provider
from safeguards.errors import RateLimited
from safeguards.rate_limit import limiter as limiter_module
from safeguards.rate_limit.limiter import RateLimiter
from safeguards.rate_limit.limits import LimitOverrides, RateLimits
from tasks.guard import CallScope, guarded_call

GMAIL = Provider.GMAIL


class _Overrides:
    """A store limit source whose overrides the test sets (no database)."""

    def __init__(self) -> None:
        self.current = LimitOverrides()

    def provider(self, store_id: str) -> Provider:
        return GMAIL

    def overrides(self, store_id: str) -> LimitOverrides:
        return self.current


def _install(client: redis.Redis, source: _Overrides, per_minute: int) -> RateLimiter:
    made = RateLimiter(
        client,
        limits={p: RateLimits(per_minute, 10_000, 100_000, 0) for p in Provider},
        stores=source,  # type: ignore[arg-type]
    )
    limiter_module._DEFAULT[:] = [made]
    return made


@pytest.fixture
def source(redis_client: redis.Redis) -> Iterator[_Overrides]:
    saved = list(limiter_module._DEFAULT)
    yield _Overrides()
    limiter_module._DEFAULT[:] = saved


def _call(scope: CallScope) -> bool:
    """One guarded call of one unit; False when the limiter refused it."""
    try:
        with guarded_call(scope, "messages.get", cost=1):
            return True
    except RateLimited:
        return False


def test_a_store_override_applies_to_the_next_guarded_call(
    redis_client: redis.Redis, source: _Overrides
) -> None:
    # Given a scope admitted twice under a limit of 100 a minute (its admission now prepared)
    _install(redis_client, source, per_minute=100)
    scope = CallScope(uuid.uuid4(), GMAIL, "gmail")
    assert [_call(scope), _call(scope)] == [True, True]
    # When the store's override lowers the minute to 3 (the limiter's cache reloads it)
    source.current = LimitOverrides(per_minute=3)
    # Then the third call is the last one admitted: the new limit, not the prepared one
    assert [_call(scope), _call(scope)] == [True, False]


def test_a_new_limiter_is_used_by_the_next_guarded_call(
    redis_client: redis.Redis, source: _Overrides
) -> None:
    # Given a scope admitted under a limiter with room
    _install(redis_client, source, per_minute=100)
    scope = CallScope(uuid.uuid4(), GMAIL, "gmail")
    assert _call(scope)
    # When another limiter, of 1 a minute, becomes the process's
    _install(redis_client, source, per_minute=1)
    # Then it decides the next call (the minute already holds one hit)
    assert not _call(scope)
