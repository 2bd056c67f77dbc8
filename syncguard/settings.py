"""Settings from the environment: service URLs unprefixed, everything else as SYNCGUARD_*."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Environment = Literal["development", "test", "production"]

#: URL schemes hosting providers hand out for PostgreSQL (``postgres://`` is Heroku's and
#: libpq's), all meaning the psycopg 3 driver SQLAlchemy needs.
_POSTGRES_SCHEMES = ("postgres://", "postgresql://", "postgresql+psycopg2://")
_SQLALCHEMY_SCHEME = "postgresql+psycopg://"


def sqlalchemy_database_url(url: str) -> str:
    """``url`` with its scheme made SQLAlchemy's psycopg 3 dialect; other URLs unchanged."""
    for scheme in _POSTGRES_SCHEMES:
        if url.startswith(scheme):
            return _SQLALCHEMY_SCHEME + url[len(scheme) :]
    return url


class Settings(BaseSettings):
    """Every knob of syncguard; unknown SYNCGUARD_* variables are an error, not silently ignored."""

    # Errors never echo the input: it holds URLs with passwords and other secrets.
    model_config = SettingsConfigDict(
        env_prefix="SYNCGUARD_", extra="forbid", frozen=True, hide_input_in_errors=True
    )

    #: PostgreSQL URL; unset means "start the embedded server under ``home``".
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "SYNCGUARD_DATABASE_URL")
    )
    #: Redis URL for safeguards' hot state and results; unset means the embedded Redis.
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "SYNCGUARD_REDIS_URL")
    )

    @field_validator("database_url")
    @classmethod
    def _psycopg_scheme(cls, url: str | None) -> str | None:
        return None if url is None else sqlalchemy_database_url(url)

    @model_validator(mode="after")
    def _redis_deployment(self) -> Settings:
        urls = [u for u in (self.redis_url, self.broker_url) if u]
        if any(u.startswith("sentinel://") for u in urls) and not self.redis_sentinel_master:
            raise ValueError("a sentinel:// URL needs SYNCGUARD_REDIS_SENTINEL_MASTER")
        if self.redis_cluster:
            if not self.redis_url or self.redis_url.startswith("sentinel://"):
                raise ValueError("SYNCGUARD_REDIS_CLUSTER needs REDIS_URL naming cluster nodes")
            if not self.broker_url:
                raise ValueError(
                    "Redis Cluster cannot be Celery's broker: with SYNCGUARD_REDIS_CLUSTER, set"
                    " BROKER_URL (RabbitMQ, or a standalone or Sentinel Redis)"
                )
        return self

    #: Celery broker URL; defaults to ``redis_url``.
    broker_url: str | None = Field(
        default=None, validation_alias=AliasChoices("BROKER_URL", "SYNCGUARD_BROKER_URL")
    )
    #: ``production`` refuses the embedded servers.
    environment: Environment = "development"
    #: Where the embedded servers keep their data.
    home: Path = Path(".syncguard")
    #: Prefix of every Redis key syncguard writes (safeguards and the broker's own keys); no
    #: braces: on Redis Cluster a ``{...}`` in it would put every key in one hash slot.
    redis_prefix: str = Field(default="syncguard:", pattern=r"^[^{}]*$")
    #: REDIS_URL names nodes of a Redis Cluster (``redis://host:port``, several ``;``-separated):
    #: the safeguards use redis-py's cluster client. Celery has no Cluster transport, so the
    #: broker (BROKER_URL, required) is RabbitMQ or a standalone/Sentinel Redis, and task
    #: results go to the broker (Redis) or back over it (``rpc://`` on RabbitMQ).
    redis_cluster: bool = False
    #: Name of the primary (``sentinel monitor <name> ...``) when REDIS_URL or BROKER_URL is
    #: ``sentinel://host:port[;sentinel://host:port...]``; Celery's ``master_name`` too.
    redis_sentinel_master: str | None = None
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
    #: Flower's login for ``syncguard up``, ``user:password`` (several comma-separated); unset
    #: in development means a password generated once under ``home``; production requires it.
    flower_basic_auth: SecretStr = SecretStr("")
    #: Log line format of every process (worker, Beat, API, CLI): ``text`` for people,
    #: ``json`` for log pipelines (one JSON object a line, with the task's or request's ids).
    log_format: Literal["text", "json"] = "text"
    #: Append every finished trace span to this file as a JSON line (tests, local debugging);
    #: OTLP export is configured by OpenTelemetry's own ``OTEL_EXPORTER_OTLP_ENDPOINT``.
    trace_file: Path | None = None
    #: The API's HTTP port for ``syncguard up`` (webhook receivers, ``/healthz``).
    api_port: int = 8000
    #: Worker concurrency for ``syncguard up``.
    worker_concurrency: int = 2
    #: The provider emulator's HTTP port for ``syncguard up`` with the demo (and ``emulator``).
    emulator_port: int = 8765
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
    #: Queue bound, seconds: a published sync is expected to start within its countdown plus
    #: this. Its store's pending marker lives that long plus one sweep period and one lease (see
    #: ``tasks.sync.requests.sync_flight``), so a lost message folds requests for at most that
    #: long; a sync queued longer only costs one extra, serialised run.
    sync_queue_bound_s: float = 600.0
    #: Period of Beat's recovery sweep (tasks/recovery.py), seconds. The recovery bound: once
    #: a fault clears, a sync whose worker died is re-published within ``sync_lease_s`` + this,
    #: and one whose message the broker lost within its countdown + ``sync_queue_bound_s`` +
    #: this, so no store's sync stays blocked longer (the ledger, not the broker, decides).
    sync_recovery_sweep_s: float = Field(default=30.0, gt=0)
    #: A sync job the sweep would re-publish more often than this is archived instead, with
    #: category ``recovery_exhausted`` (a job that kills its workers stops killing them), count.
    sync_max_recoveries: int = Field(default=5, ge=0)
    #: Jobs one sweep recovers at most (the rest wait one period), count.
    sync_recovery_batch: int = Field(default=200, ge=1)

    # --- inbound webhooks (api/) ---
    #: Largest inbound webhook body accepted, bytes (Content-Length and bytes actually read).
    webhook_max_body_bytes: int = 1024 * 1024
    #: Google's JWKS that verifies Pub/Sub push OIDC tokens (the emulator's in tests and demos).
    gmail_push_jwks_url: str = "https://www.googleapis.com/oauth2/v3/certs"
    #: How long fetched push-token keys are trusted before a refetch, seconds.
    gmail_push_jwks_ttl_s: float = 3600.0
    #: Timeout of one JWKS fetch, seconds.
    gmail_push_jwks_timeout_s: float = 5.0
    #: Static push-token keys (a PEM public key or JWKS JSON, text); set, it replaces the URL.
    gmail_push_keys: str = ""
    #: Expected ``aud`` of push tokens (a URL string); unset means the URL the push came to.
    gmail_push_audience: str | None = None
    #: The push service account's email (an address) that push tokens must carry; unset means
    #: every push is refused with 503 until configured (Pub/Sub keeps redelivering meanwhile).
    gmail_push_service_account: str | None = None
    #: Clock skew tolerated on push tokens' ``exp`` / ``iat``, seconds.
    gmail_push_leeway_s: float = 30.0

    # --- subscriptions and their health (tasks/webhooks.py, tasks/renewal.py, webhook_health) ---
    #: Pub/Sub topic every Gmail watch publishes to (full resource name).
    gmail_pubsub_topic: str = "projects/syncguard/topics/gmail-push"
    #: Public base URL of the API (no trailing slash): Graph posts to ``{this}/webhooks/outlook``.
    public_base_url: str = "http://127.0.0.1:8000"
    #: Lifetime asked for a Graph subscription, minutes (Graph's documented ceiling is 10,080);
    #: the expirationDateTime Graph answers is what we store.
    graph_subscription_lifetime_min: int = Field(default=4230, ge=45, le=10080)
    #: A Graph subscription expiring within this many seconds is renewed by Beat.
    graph_renew_before_s: int = 12 * 3600
    #: A Gmail watch last renewed longer ago than this is renewed (Google: once a day), seconds.
    gmail_watch_renew_after_s: int = 86400
    #: A Gmail watch expiring within this many seconds is renewed whatever its age.
    gmail_watch_renew_before_s: int = 2 * 86400
    #: How often every active store gets a reconciliation sync, seconds.
    reconciliation_interval_s: float = 900.0
    #: Health window: inbound deliveries younger than this feed the score, seconds.
    health_window_s: int = 3600
    #: A subscription whose health score is below this (0..1) gets a renewal.
    health_renew_below: float = Field(default=0.5, ge=0.0, le=1.0)
    #: Failed inbound deliveries in a row that name the ``consecutive_failures`` pattern (count).
    health_consecutive_failures: int = 5
    #: Occurrences of one error message in the window that name ``repeated_error`` (count).
    health_repeated_error: int = 3
    #: ``expiring_without_renewal``: expiry closer than this, seconds...
    health_expiring_within_s: int = 3600
    #: ...and no renewal (or creation) for longer than this, seconds.
    health_renewal_stale_s: int = 6 * 3600
    #: ``silent_subscription``: no notification for this long while the mailbox changed, seconds.
    health_silent_after_s: int = 6 * 3600
    #: At most one renewal is enqueued per subscription per this many seconds.
    renewal_request_cooldown_s: int = 300

    #: Renewals failed in a row that name the ``renewal_failing`` health pattern (count).
    health_renewal_failures: int = 2

    # --- outbound deliveries (tasks/outbound.py) ---
    #: Timeout of one delivery POST (connect, read, write, pool each), seconds.
    outbound_timeout_s: float = 15.0
    #: Wait before each retry of a failed delivery, seconds (Svix's schedule); past the last
    #: entry the delivery goes to the dead-letter archive. JSON in the environment: [5, 300].
    outbound_retry_schedule_s: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
    #: An endpoint is disabled once it has failed this many deliveries in a row (a count)...
    outbound_disable_after_failures: int = 15
    #: ...and has been failing, without one success, for at least this long, seconds.
    outbound_disable_after_s: float = 5 * 86400.0
    #: Period of Beat's outbound recovery sweep (tasks/outbound/ledger.py), seconds.
    outbound_recovery_sweep_s: float = Field(default=30.0, gt=0)
    #: A queued or delivering outbound message quiet this long past its expected start is
    #: re-published by the sweep, seconds; longer than a delivery POST (``outbound_timeout_s``)
    #: and than a healthy webhooks queue makes a message wait.
    outbound_queue_bound_s: float = Field(default=600.0, gt=0)
    #: An outbound message the sweep would re-publish more often than this is archived instead
    #: (``recovery_exhausted``), count.
    outbound_max_recoveries: int = Field(default=5, ge=0)

    # --- provider-app quota (safeguards/rate_limit/app_quota.py, app_limits.py) ---
    #: Units per window a whole provider app may spend, overriding the defaults: a JSON object
    #: keyed by provider (every app of it) or app name (``gmail:<client id>``,
    #: ``outlook:<client id>@<tenant id>``), e.g. {"gmail": 600000}; 0 turns the quota off.
    app_quota_limits: dict[str, int] = Field(default_factory=dict)
    #: Units one worker process leases at once, keyed as ``app_quota_limits``: at most this
    #: many units minus one per process sit leased but unspent (refused early, never over).
    app_quota_blocks: dict[str, int] = Field(default_factory=dict)

    # --- metrics and Prometheus (safeguards/metrics.py, safeguards/prometheus.py) ---
    #: How often Beat snapshots queues, backlog, circuits, usage and webhooks, seconds.
    metrics_collect_interval_s: float = 60.0
    #: Timeout of one Prometheus counter write to Redis, seconds (kept short: a hot path).
    prometheus_redis_timeout_s: float = 0.5
    #: After a failed counter write, observations are skipped (and counted) for this long, seconds.
    prometheus_retry_after_s: float = 5.0

    # --- alerts (safeguards/alerts.py) ---
    #: A subscription whose latest health score (0..1) is below this raises a warning alert.
    alert_health_below: float = Field(default=0.3, ge=0.0, le=1.0)
    #: ...and below this (0..1), a critical one.
    alert_health_critical_below: float = Field(default=0.1, ge=0.0, le=1.0)
    #: Rate-limit denials of one store above this many per minute raise an alert (denials/min).
    alert_denials_per_min_above: float = Field(default=10.0, ge=0.0)
    #: Shortest interval the denial rate is measured over, seconds (a shorter one waits).
    alert_denial_sample_min_s: float = Field(default=30.0, gt=0.0)
    #: Unreviewed dead-letter entries of one business above this raise its alert (count).
    alert_backlog_per_business_above: int = Field(default=50, ge=0)
    #: Unreviewed dead-letter entries in total above this raise a system alert, logged (count).
    alert_backlog_overall_above: int = Field(default=500, ge=0)

    # --- retention cleanup (safeguards/cleanup.py) ---
    #: Successful webhook deliveries (``webhook_delivery_log``) are kept this long, days.
    cleanup_delivery_success_retention_days: int = Field(default=7, ge=1)
    #: Failed webhook deliveries (``webhook_delivery_log``) are kept this long, days.
    cleanup_delivery_failure_retention_days: int = Field(default=30, ge=1)
    #: Reviewed ``delivery_exhausted`` dead-letter entries are kept this long after review, days.
    cleanup_failed_delivery_retention_days: int = Field(default=30, ge=1)
    #: ``system_health_metrics`` rows are kept this long, days.
    cleanup_health_metrics_retention_days: int = Field(default=90, ge=1)
    #: ``webhook_health_log`` readings are kept this long, days.
    cleanup_webhook_health_retention_days: int = Field(default=30, ge=1)
    #: Resolved alerts are kept this long after resolution, days (open alerts are never deleted).
    cleanup_resolved_alert_retention_days: int = Field(default=90, ge=1)
    #: Rows one delete batch (one short transaction) removes at most, a count.
    cleanup_batch_size: int = Field(default=5000, ge=1)
    #: Batches one table may run per cleanup run, a count; the rest waits for the next run.
    cleanup_max_batches: int = Field(default=400, ge=1)
    #: Time one table may spend deleting per run, seconds (tables x this < task soft time limit).
    cleanup_max_seconds_per_table: float = Field(default=45.0, gt=0)
    #: ``lock_timeout`` of each batch, milliseconds: a batch gives up rather than queue on a lock.
    cleanup_lock_timeout_ms: int = Field(default=2000, ge=1)
    #: ``statement_timeout`` of each batch and of a dry run's count, milliseconds.
    cleanup_statement_timeout_ms: int = Field(default=30000, ge=1)
    #: A table is ANALYZEd after a run that deleted at least this many rows, a count.
    cleanup_analyze_after_rows: int = Field(default=10000, ge=1)

    # --- dashboard and JSON API (api/) ---
    #: Cookie holding the dashboard's session token after login (HttpOnly, SameSite=Strict).
    dashboard_cookie_name: str = "syncguard_session"
    #: Lifetime of the dashboard login session and its cookie, seconds.
    dashboard_cookie_max_age_s: int = 8 * 3600
    #: Mark the login cookie Secure (HTTPS only); always on when ``environment`` is production.
    dashboard_cookie_secure: bool = False
    #: Archive entries and alerts the dashboard lists (a count).
    dashboard_list_limit: int = 50
    #: Largest ``limit`` a JSON API list accepts (a count).
    api_max_list_limit: int = 1000
    #: Window a metric trend covers when ``since`` is not given, seconds.
    api_metric_window_s: int = 6 * 3600

    # --- beat (syncguard/beat.py) ---
    #: How often Beat's heartbeat entry proves a worker reaches PostgreSQL and Redis, seconds.
    heartbeat_every_s: float = Field(default=60.0, gt=0)
    #: A Beat entry is skipped when any Beat ran it less than this fraction of its period ago
    #: (0..1; below 1 so one Beat's own drift never skips its next run).
    beat_claim_fraction: float = Field(default=0.9, gt=0.0, le=1.0)
    #: The period assumed for crontab and solar entries when two Beats deduplicate, seconds
    #: (crontab's resolution is one minute).
    beat_crontab_granularity_s: float = Field(default=60.0, gt=0)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
