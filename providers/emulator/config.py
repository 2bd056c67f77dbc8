"""Emulator settings: token lifetimes, subscription limits, push identity, delivery timeouts."""

from __future__ import annotations

from dataclasses import dataclass

#: Default Graph subscription maximum lifetime, in minutes (newer Graph documentation).
GRAPH_MAX_SUBSCRIPTION_MINUTES = 10_080
#: Graph raises any shorter requested lifetime to this many minutes.
GRAPH_MIN_SUBSCRIPTION_MINUTES = 45


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything about the emulator a test or demo may want to change."""

    #: Access-token lifetime in seconds; keep it short in tests so refresh gets exercised.
    access_token_lifetime_s: float = 3600.0
    #: Longest Graph subscription lifetime in minutes; longer requests are capped.
    graph_max_subscription_minutes: int = GRAPH_MAX_SUBSCRIPTION_MINUTES
    #: Shortest Graph subscription lifetime in minutes; shorter requests are raised.
    graph_min_subscription_minutes: int = GRAPH_MIN_SUBSCRIPTION_MINUTES
    #: Status for a stale Graph delta token: 410 (Gone) or 400 (code syncStateNotFound).
    stale_delta_status: int = 410
    #: Graph page size when the client sends no `Prefer: odata.maxpagesize`.
    graph_default_page_size: int = 10
    #: Tenant id put into Graph notifications.
    tenant_id: str = "00000000-0000-0000-0000-00000000e3e3"
    #: Gmail watch lifetime in seconds (Gmail: 7 days).
    gmail_watch_lifetime_s: float = 7 * 24 * 3600.0
    #: Minimum seconds between two Gmail push notifications of one mailbox (coalesced).
    gmail_push_min_interval_s: float = 1.0
    #: First historyId of every new mailbox.
    history_id_start: int = 1000
    #: Where Gmail Pub/Sub pushes go (None: nowhere until set via the control API).
    gmail_push_url: str | None = None
    #: `aud` claim of the push OIDC token (None: the push URL itself, as Pub/Sub does).
    gmail_push_audience: str | None = None
    #: `email` claim of the push OIDC token (the push service account).
    service_account_email: str = "gmail-push@emulator.iam.gserviceaccount.com"
    #: Seconds the Graph validation handshake may take before the subscription fails.
    validation_timeout_s: float = 10.0
    #: Seconds a notification delivery may take before it counts as failed.
    delivery_timeout_s: float = 5.0
    #: Default sleep of the `timeout` fault, in seconds.
    timeout_fault_s: float = 30.0
