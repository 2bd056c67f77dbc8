"""SQLAlchemy 2.0 models of every syncguard table; importing this registers them on ``Base``."""

from models.api_keys import ApiKey, ApiKeyRole
from models.base import Base
from models.enums import (
    AlertSeverity,
    AlertStatus,
    CircuitState,
    CleanupOutcome,
    Direction,
    FailureCategory,
    MetricType,
    Provider,
    ReviewResolution,
    StoreStatus,
    SubscriptionStatus,
    SyncJobStatus,
    SyncKind,
    SyncTrigger,
)
from models.operations import Alert, CleanupAuditLog, SystemHealthMetric
from models.outbound import OutboundMessage, OutboundStatus
from models.safeguards import (
    ALL_OPERATIONS,
    CircuitBreakerState,
    FailedJobArchive,
    ProviderRateLimit,
)
from models.sessions import DashboardSession
from models.sync import SyncedMessage, SyncJob
from models.tenancy import Business, Store
from models.webhooks import (
    WebhookDeliveryLog,
    WebhookEndpoint,
    WebhookHealthLog,
    WebhookSubscription,
)

#: Tables whose rows belong to one business: RLS scopes them by ``business_id``.
TENANT_TABLES: tuple[str, ...] = tuple(
    t.name for t in Base.metadata.sorted_tables if "business_id" in t.c
)
#: Tables that carry both keys: a trigger fills ``business_id`` from ``store_id``.
STORE_SCOPED_TABLES: tuple[str, ...] = tuple(
    t.name for t in Base.metadata.sorted_tables if {"business_id", "store_id"} <= set(t.c.keys())
)

__all__ = [
    "ALL_OPERATIONS",
    "STORE_SCOPED_TABLES",
    "TENANT_TABLES",
    "Alert",
    "AlertSeverity",
    "AlertStatus",
    "ApiKey",
    "ApiKeyRole",
    "Base",
    "Business",
    "CircuitBreakerState",
    "CircuitState",
    "CleanupAuditLog",
    "CleanupOutcome",
    "DashboardSession",
    "Direction",
    "FailedJobArchive",
    "FailureCategory",
    "MetricType",
    "OutboundMessage",
    "OutboundStatus",
    "Provider",
    "ProviderRateLimit",
    "ReviewResolution",
    "Store",
    "StoreStatus",
    "SubscriptionStatus",
    "SyncJob",
    "SyncJobStatus",
    "SyncKind",
    "SyncTrigger",
    "SyncedMessage",
    "SystemHealthMetric",
    "WebhookDeliveryLog",
    "WebhookEndpoint",
    "WebhookHealthLog",
    "WebhookSubscription",
]
