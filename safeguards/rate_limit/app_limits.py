"""What a provider app's quota is: the app's identity, its window and the defaults (no I/O).

A provider app is what a provider's shared quota is counted against, on top of each mailbox's:

- Gmail: the Google Cloud project of the OAuth client, 1,200,000 quota units per minute across
  all its users ("Per minute per project", Gmail API usage limits,
  https://developers.google.com/gmail/api/reference/quota; /work/shared/providers.md).
- Microsoft Graph: the app (OAuth client id) in one tenant. Graph evaluates limits "per app across
  all tenants, per tenant for all apps, per app per tenant"; the only figure it documents for
  every service is 130,000 requests per 10 seconds per app across all tenants ("Microsoft Graph
  service-specific throttling limits", https://learn.microsoft.com/graph/throttling-limits).

Operators set other figures with ``SYNCGUARD_APP_QUOTA_LIMITS`` / ``SYNCGUARD_APP_QUOTA_BLOCKS``:
JSON objects whose keys are a provider (``"gmail"``: the default of every Gmail app) or one
app's name (``"gmail:<client id>"``, ``"outlook:<client id>@<tenant id>"``), like a store's '*'
row overriding the provider's defaults. A limit of 0 turns the app quota off.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

from models.enums import Provider

#: The tenant of a Graph app whose store names none: the app counted across all its tenants.
ALL_TENANTS = "common"


@dataclass(frozen=True, order=True)
class AppId:
    """One provider app: its provider, OAuth client id and (Graph only) tenant id."""

    provider: Provider
    client_id: str
    tenant_id: str | None = None

    @property
    def name(self) -> str:
        """``gmail:<client>`` or ``outlook:<client>@<tenant or common>``: the config key."""
        if self.provider is Provider.GMAIL:
            return f"{self.provider.value}:{self.client_id}"
        return f"{self.provider.value}:{self.client_id}@{self.tenant_id or ALL_TENANTS}"

    @classmethod
    def parse(cls, name: str) -> AppId:
        """The inverse of ``name``; ValueError for a name of no known provider."""
        provider, _, rest = name.partition(":")
        if Provider(provider) is Provider.GMAIL:
            return cls(Provider.GMAIL, rest)
        client_id, _, tenant = rest.rpartition("@")
        return cls(Provider.OUTLOOK, client_id, None if tenant == ALL_TENANTS else tenant)

    @property
    def tag(self) -> str:
        """The name made safe as a Redis Cluster hash tag (no braces)."""
        return self.name.replace("{", "(").replace("}", ")")


@dataclass(frozen=True)
class AppQuota:
    """A provider app's quota: ``limit`` units per ``window_ms``, leased in blocks.

    ``block``: units one worker process leases at once; ``validity_ms``: how long a leased block
    may be spent; ``bucket_ms``: width of the grant buckets (a grant is counted whole bucket, so
    wider buckets refuse a little early, never admit too much).
    """

    limit: int
    window_ms: int
    block: int
    validity_ms: int
    bucket_ms: int

    @property
    def enabled(self) -> bool:
        """False when the operator turned this app's quota off (limit 0)."""
        return self.limit > 0


#: Gmail: 1,000,000 of Google's 1,200,000 units per minute per project (headroom as for the
#: per-user default, 5,000 of 6,000); a block of 200 units is ten ``messages.get``.
GMAIL_APP_QUOTA = AppQuota(
    limit=1_000_000, window_ms=60_000, block=200, validity_ms=2_000, bucket_ms=1_000
)
#: Graph: 120,000 of the 130,000 requests per 10 s Graph documents per app; a block is 10.
OUTLOOK_APP_QUOTA = AppQuota(
    limit=120_000, window_ms=10_000, block=10, validity_ms=1_000, bucket_ms=100
)
#: The default quota of every app of each provider.
PROVIDER_APP_QUOTAS: Mapping[Provider, AppQuota] = MappingProxyType(
    {Provider.GMAIL: GMAIL_APP_QUOTA, Provider.OUTLOOK: OUTLOOK_APP_QUOTA}
)


def quota_for(
    app: AppId,
    limits: Mapping[str, int],
    blocks: Mapping[str, int],
    defaults: Mapping[Provider, AppQuota] = PROVIDER_APP_QUOTAS,
) -> AppQuota:
    """The app's quota: its provider's default, then the provider's and the app's overrides.

    ``limits`` / ``blocks`` are the settings' JSON objects (keys: provider or app name).
    Raises ValueError for a negative limit or a block below 1.
    """
    quota = defaults[app.provider]
    for key in (app.provider.value, app.name):
        if key in limits:
            quota = replace(quota, limit=limits[key])
        if key in blocks:
            quota = replace(quota, block=blocks[key])
    if quota.limit < 0 or quota.block < 1:
        raise ValueError(f"app quota of {app.name}: limit must be >= 0 and block >= 1")
    return quota


@dataclass(frozen=True)
class AppDecision:
    """Whether the app's quota lets a call of ``units`` go ahead; refused: after how long."""

    allowed: bool
    retry_after_s: float
    reason: str | None
    units: int
    #: False when the units came from the worker's leased block (no Redis round trip).
    round_trip: bool
    #: The grant bucket the units came from (-1: none); they may only go back to it.
    bucket: int = -1


@dataclass(frozen=True)
class AppUsage:
    """One app's live usage as Redis holds it (units; ``used`` counts granted, not returned)."""

    app: str
    provider: str
    limit: int
    window_s: float
    used: int
    granted_total: int
    returned_total: int
    refused_total: int
