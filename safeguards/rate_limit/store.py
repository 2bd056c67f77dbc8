"""The rate limiter's PostgreSQL side: stores' limit configuration in, live usage out.

The decisions themselves never touch PostgreSQL (they are one Redis round trip, see
``safeguards.rate_limit.limiter``); PostgreSQL holds what operators configure per store and a mirror
of the usage for dashboards, both in ``provider_rate_limits`` under the '*' operation row.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from sqlalchemy import Engine, text

from models.enums import Provider
from models.safeguards import ALL_OPERATIONS
from safeguards.rate_limit.limits import LimitOverrides

__all__ = ["OVERRIDE_CACHE_TTL_S", "StoreLimitSource", "upsert_usage"]

#: Seconds a store's limit overrides are cached in process before PostgreSQL is read again.
OVERRIDE_CACHE_TTL_S = 30.0


class StoreLimitSource:
    """Each store's provider (immutable, cached for good) and '*' overrides (cached briefly)."""

    _QUERY = text(
        "SELECT s.provider, p.requests_per_minute, p.requests_per_hour, p.requests_per_day, "
        "p.concurrency_limit FROM stores s LEFT JOIN provider_rate_limits p "
        "ON p.store_id = s.id AND p.operation_type = :all WHERE s.id = CAST(:id AS uuid)"
    )

    def __init__(self, engine: Engine | None = None, ttl_s: float = OVERRIDE_CACHE_TTL_S):
        self._engine = engine
        self._ttl_s = ttl_s
        self._providers: dict[str, Provider] = {}
        self._overrides: dict[str, tuple[float, LimitOverrides]] = {}

    def provider(self, store_id: str) -> Provider:
        """The store's provider; LookupError if the store does not exist."""
        if store_id not in self._providers:
            self._load(store_id)
        if store_id not in self._providers:
            raise LookupError(f"store {store_id} does not exist")
        return self._providers[store_id]

    def overrides(self, store_id: str) -> LimitOverrides:
        """The store's overrides (none for a store unknown to PostgreSQL)."""
        cached = self._overrides.get(store_id)
        if cached is None or cached[0] < time.monotonic():
            return self._load(store_id)
        return cached[1]

    def invalidate(self) -> None:
        """Forget the cached overrides (after an operator changed them)."""
        self._overrides.clear()

    def _load(self, store_id: str) -> LimitOverrides:
        from syncguard.db import get_engine  # lazy: a limiter without PostgreSQL never connects

        with (self._engine or get_engine()).connect() as conn:
            row = conn.execute(self._QUERY, {"all": ALL_OPERATIONS, "id": store_id}).first()
        overrides = LimitOverrides(*row[1:]) if row else LimitOverrides()
        if row:
            self._providers[store_id] = Provider(row[0])
        self._overrides[store_id] = (time.monotonic() + self._ttl_s, overrides)
        return overrides


_UPSERT = text("""
INSERT INTO provider_rate_limits AS p (store_id, provider, operation_type, current_minute_usage,
    current_hour_usage, current_day_usage, denied_count, throttled_until, last_request_at,
    usage_synced_at)
SELECT s.id, s.provider, :all, u.minute, u.hour, u.day, u.denied,
    to_timestamp(u.throttled_until), to_timestamp(u.last_request_at), now()
FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS u(store_id uuid, minute int, hour int, day int,
    denied int, throttled_until float8, last_request_at float8)
JOIN stores s ON s.id = u.store_id
ON CONFLICT (store_id, operation_type) DO UPDATE SET
    current_minute_usage = EXCLUDED.current_minute_usage,
    current_hour_usage = EXCLUDED.current_hour_usage,
    current_day_usage = EXCLUDED.current_day_usage,
    denied_count = p.denied_count + EXCLUDED.denied_count,
    throttled_until = EXCLUDED.throttled_until,
    last_request_at = COALESCE(EXCLUDED.last_request_at, p.last_request_at),
    usage_synced_at = EXCLUDED.usage_synced_at, updated_at = now()
""")


def upsert_usage(rows: list[dict[str, Any]], engine: Engine | None = None) -> int:
    """Write usage rows into the stores' '*' rows of provider_rate_limits; returns rows written."""
    from syncguard.db import service_session  # lazy, as in StoreLimitSource._load

    rows = [r for r in rows if _is_uuid(r["store_id"])]  # other ids cannot be stores
    if not rows:
        return 0
    with service_session(engine) as session:
        result = session.execute(_UPSERT, {"all": ALL_OPERATIONS, "rows": json.dumps(rows)})
        return int(result.rowcount)  # type: ignore[attr-defined]


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
