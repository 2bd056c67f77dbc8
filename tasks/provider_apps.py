"""The provider app a store's calls spend (its OAuth client, and tenant for Graph), and the guard's
step that spends the app's quota (``safeguards.rate_limit.app_quota``) before the store's.

A store's app is read from its credentials: Gmail's quota is per Google Cloud project, i.e. per
OAuth client id; Graph's per app per tenant, i.e. client id and the credentials' ``tenant_id``
(a Graph store without one is counted with every tenant of its app, ``@common``: stricter,
never looser). Client and tenant ids are not secrets; nothing else of the credentials is kept.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from celery.signals import worker_process_shutdown
from sqlalchemy import select
from sqlalchemy.exc import InterfaceError, OperationalError

from models import MetricType, Provider, Store
from safeguards.errors import RateLimited, Refused, SafeguardUnavailable
from safeguards.health_metrics.recorder import record_metric
from safeguards.rate_limit.app_limits import AppId
from safeguards.rate_limit.app_quota import get_app_quota_pool, give_back_leases
from safeguards.rate_limit.limiter import get_rate_limiter
from syncguard.crypto import DecryptionError, decrypt_json
from syncguard.db import service_session
from syncguard.settings import get_settings

log = logging.getLogger(__name__)

#: Seconds a store's app is remembered in process (a reconnect with another client is seen
#: within this long).
APP_CACHE_TTL_S = 300.0
#: Most stores remembered per process before the cache starts afresh.
APP_CACHE_SIZE = 50_000

_apps: dict[uuid.UUID, tuple[float, AppId | None]] = {}


class Scope(Protocol):
    """What the guard knows of a call (``tasks.guard.CallScope``; a protocol: no import cycle)."""

    @property
    def store_id(self) -> uuid.UUID: ...

    @property
    def provider(self) -> Provider: ...


def store_app(store_id: uuid.UUID) -> AppId | None:
    """The store's provider app, None for a store without credentials (cached briefly).

    Raises SafeguardUnavailable when PostgreSQL cannot be reached.
    """
    cached = _apps.get(store_id)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    try:
        with service_session() as session:
            row = session.execute(
                select(Store.provider, Store.credentials_encrypted).where(Store.id == store_id)
            ).first()
    except (OperationalError, InterfaceError) as exc:  # PostgreSQL unreachable: not cached
        raise SafeguardUnavailable(f"store {store_id}'s app unreadable: {exc}") from exc
    app = None
    if row is not None and row.credentials_encrypted is not None:
        try:
            # Imported here: providers.oauth loads httpx, which an idle worker need not carry.
            from providers.oauth import OAuthCredentials

            creds = OAuthCredentials.from_dict(decrypt_json(row.credentials_encrypted))
        except (DecryptionError, KeyError, ValueError) as exc:
            # The call cannot authenticate either: it fails there, with its own category.
            log.warning("store %s: credentials unreadable, no app quota: %s", store_id, exc)
        else:
            tenant = creds.tenant_id if row.provider is Provider.OUTLOOK else None
            app = AppId(row.provider, creds.client_id, tenant)
    if len(_apps) >= APP_CACHE_SIZE:
        _apps.clear()
    _apps[store_id] = (time.monotonic() + APP_CACHE_TTL_S, app)
    return app


def _nothing() -> None:
    return None


def spend_app_quota(scope: Scope, operation: str, cost: int | None) -> Callable[[], None]:
    """Spend the call's units of its app's quota; returns what gives them back if it never runs.

    Mostly in process (a leased block); a lease is one round trip on the app's Redis slot.
    Raises RateLimited when the app's quota is spent (the task defers, as for a store limit;
    the circuit never sees it); with Redis or PostgreSQL unreachable, applies
    ``safeguard_fail_mode``.
    """
    pool = get_app_quota_pool()
    try:
        app = store_app(scope.store_id)
        if app is None:
            return _nothing
        units = get_rate_limiter().costs[scope.provider].of(operation) if cost is None else cost
        decision = pool.take(app, units)
    except SafeguardUnavailable as exc:
        settings = get_settings()
        record_metric(
            MetricType.SAFEGUARDS, "safeguard_unavailable", 1.0, tags={"safeguard": "app_quota"}
        )
        if settings.safeguard_fail_mode == "closed":
            log.warning("app quota unavailable, failing closed (the call is deferred): %s", exc)
            wait_s = settings.fail_closed_retry_s
            raise RateLimited(f"app quota unavailable: {exc}", wait_s) from exc
        log.warning("app quota unavailable, failing open (the call goes unguarded): %s", exc)
        return _nothing
    if not decision.allowed:
        raise RateLimited(
            f"{scope.provider} {operation}: app {app.name} quota: {decision.reason}",
            decision.retry_after_s,
        )
    return lambda: pool.give_back(app, decision)


@contextmanager
def app_quota(scope: Scope, operation: str, cost: int | None) -> Iterator[None]:
    """Spend the call's units of its app's quota around the store's admission.

    ``with app_quota(scope, op, cost): admit the store's call``: refused by the app, the block
    never runs (RateLimited); refused inside it (circuit, store limiter), the units go back to
    this process's block, so both quotas are spent for a call or neither is.
    """
    give_back = spend_app_quota(scope, operation, cost)
    try:
        yield
    except Refused:
        give_back()
        raise


# A prefork child leaves by os._exit, past atexit: its unspent units go back here instead.
worker_process_shutdown.connect(lambda **_: give_back_leases(), weak=False)
