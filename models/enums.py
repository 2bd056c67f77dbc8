"""The domain's closed vocabularies, stored as checked strings (no native PG enums to migrate)."""

from __future__ import annotations

import enum

from sqlalchemy import Enum


class Provider(enum.StrEnum):
    GMAIL = "gmail"
    OUTLOOK = "outlook"


class StoreStatus(enum.StrEnum):
    ACTIVE = "active"
    NEEDS_REAUTH = "needs_reauth"
    PAUSED = "paused"
    DISABLED = "disabled"


class SyncKind(enum.StrEnum):
    FULL = "full"
    INCREMENTAL = "incremental"


class SyncTrigger(enum.StrEnum):
    WEBHOOK = "webhook"
    MANUAL = "manual"
    SCHEDULE = "schedule"
    RECONCILIATION = "reconciliation"
    CONTINUATION = "continuation"
    RESYNC = "resync"
    REPLAY = "replay"
    #: Requested while another sync of the store ran: the one run that covers the burst.
    FOLLOW_UP = "follow_up"


class SyncJobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DEFERRED = "deferred"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ARCHIVED = "archived"


class SubscriptionStatus(enum.StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    EXPIRED = "expired"
    FAILED = "failed"
    REMOVED = "removed"


class CircuitState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class FailureCategory(enum.StrEnum):
    TRANSIENT_EXHAUSTED = "transient_exhausted"
    THROTTLED_TOO_LONG = "throttled_too_long"
    CIRCUIT_OPEN_TOO_LONG = "circuit_open_too_long"
    DEFERRED_TOO_LONG = "deferred_too_long"
    AUTHENTICATION = "authentication"
    VALIDATION = "validation"
    CURSOR_LOST = "cursor_lost"
    DELIVERY_EXHAUSTED = "delivery_exhausted"
    UNKNOWN = "unknown"
    #: The recovery sweep re-published the job more often than ``sync_max_recoveries``
    #: (its workers kept dying, or its messages kept being lost): archived for review.
    RECOVERY_EXHAUSTED = "recovery_exhausted"


class ReviewResolution(enum.StrEnum):
    REPLAYED = "replayed"
    DISCARDED = "discarded"
    FIXED = "fixed"
    WONT_FIX = "wont_fix"


class Direction(enum.StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class MetricType(enum.StrEnum):
    PERFORMANCE = "performance"
    ERRORS = "errors"
    USAGE = "usage"
    QUEUE = "queue"
    SAFEGUARDS = "safeguards"
    WEBHOOKS = "webhooks"


class AlertSeverity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertStatus(enum.StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class CleanupOutcome(enum.StrEnum):
    SUCCESS = "success"
    FAILED = "failed"
    DRY_RUN = "dry_run"


def str_enum(cls: type[enum.StrEnum], name: str) -> Enum:
    """A VARCHAR column restricted by a named CHECK constraint to the values of ``cls``."""
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=32,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )
