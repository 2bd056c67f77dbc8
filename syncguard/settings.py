"""Settings from the environment: service URLs unprefixed, everything else as SYNCGUARD_*."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

Environment = Literal["development", "test", "production"]


class Settings(BaseSettings):
    """Every knob of syncguard; unknown SYNCGUARD_* variables are an error, not silently ignored."""

    model_config = SettingsConfigDict(env_prefix="SYNCGUARD_", extra="forbid", frozen=True)

    #: PostgreSQL URL; unset means "start the embedded server under ``home``".
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "SYNCGUARD_DATABASE_URL")
    )
    #: Redis URL for safeguards' hot state and results; unset means the embedded Redis.
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "SYNCGUARD_REDIS_URL")
    )
    #: Celery broker URL; defaults to ``redis_url``.
    broker_url: str | None = Field(
        default=None, validation_alias=AliasChoices("BROKER_URL", "SYNCGUARD_BROKER_URL")
    )
    #: ``production`` refuses the embedded servers.
    environment: Environment = "development"
    #: Where the embedded servers keep their data.
    home: Path = Path(".syncguard")
    #: Prefix of every Redis key syncguard writes (safeguards and the broker's own keys).
    redis_prefix: str = "syncguard:"
    #: Database role workers and the API's own work assume (full access under RLS).
    db_service_role: str = "syncguard_service"
    #: Read-only role tenant-scoped sessions assume.
    db_tenant_role: str = "syncguard_tenant"
    #: Longest a single task may run before its soft time limit, seconds.
    task_soft_time_limit_s: int = 300
    #: Hard time limit, seconds: the worker child is killed past this.
    task_time_limit_s: int = 360
    #: Ceiling of any retry backoff or deferral countdown, seconds.
    max_backoff_s: int = 3600
    #: What a provider call does when the safeguards' Redis is unreachable: proceed or defer.
    safeguard_fail_mode: Literal["open", "closed"] = "open"
    #: A job refused by the safeguards for longer than this is archived, seconds.
    defer_horizon_s: int = 6 * 3600
    #: Countdown of a deferral when failing closed with no better estimate, seconds.
    fail_closed_retry_s: float = 30.0
    #: How long task results are kept, seconds.
    result_expires_s: int = 86400
    #: Flower's HTTP port for ``syncguard up``.
    flower_port: int = 5555
    #: Worker concurrency for ``syncguard up``.
    worker_concurrency: int = 2
    #: Fernet keys for credentials at rest, comma-separated, newest first; unset in development
    #: and test means a key generated once under ``home``; production requires it.
    encryption_keys: SecretStr = SecretStr("")

    #: Gmail API and Google OAuth token endpoint (the emulator's URL in tests and the demo).
    gmail_api_url: str = "https://gmail.googleapis.com"
    gmail_token_url: str = "https://oauth2.googleapis.com/token"
    #: Microsoft Graph and the Microsoft identity platform's token endpoint.
    graph_api_url: str = "https://graph.microsoft.com"
    graph_token_url: str = "https://login.microsoftonline.com/common/oauth2/v2.0/token"
    #: A sync run hands its worker back after this many pages (fairness across stores).
    sync_max_pages_per_run: int = 20
    #: ...or after this many seconds, whichever comes first.
    sync_max_seconds_per_run: float = 30.0
    #: Messages per provider page.
    sync_page_size: int = 100
    #: A sync's per-store lease, seconds: a crashed holder blocks its store at most this long.
    sync_lease_s: float = 120.0

    # --- inbound webhooks (api/) ---

    # --- subscriptions and their health (tasks/webhooks.py, safeguards/health.py) ---

    # --- outbound deliveries (tasks/outbound.py) ---


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
