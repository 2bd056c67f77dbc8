"""Inbound subscriptions, outbound endpoints, and the delivery and health logs of both."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    ARRAY,
    CheckConstraint,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import (
    Base,
    business_fk,
    created_at,
    jsonb,
    optional_business_fk,
    optional_store_fk,
    store_fk,
    updated_at,
    uuidpk,
)
from models.enums import Direction, Provider, SubscriptionStatus, str_enum


class WebhookSubscription(Base):
    """A store's Gmail watch or Graph subscription, with its expiry and renewal bookkeeping."""

    __tablename__ = "webhook_subscriptions"
    __table_args__ = (
        UniqueConstraint("provider", "provider_subscription_id"),
        Index("ix_webhook_subscriptions_status_expires_at", "status", "expires_at"),
    )

    id: Mapped[uuidpk]
    business_id: Mapped[business_fk]
    store_id: Mapped[store_fk] = mapped_column(index=True)
    provider: Mapped[Provider] = mapped_column(str_enum(Provider, "provider"))
    provider_subscription_id: Mapped[str | None] = mapped_column(String(255))
    resource: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime | None]
    #: SHA-256 of the clientState we generated: enough to check a notification, useless if read.
    client_state_hash: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[SubscriptionStatus] = mapped_column(
        str_enum(SubscriptionStatus, "subscription_status"),
        server_default=SubscriptionStatus.PENDING.value,
    )
    renewal_count: Mapped[int] = mapped_column(server_default="0")
    consecutive_renewal_failures: Mapped[int] = mapped_column(server_default="0")
    last_renewed_at: Mapped[datetime | None]
    last_renewal_error: Mapped[str | None] = mapped_column(Text)
    last_notification_at: Mapped[datetime | None]
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]


class WebhookEndpoint(Base):
    """A business's outbound endpoint: where its events are delivered, signed with its secret."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[uuidpk]
    business_id: Mapped[business_fk]
    url: Mapped[str] = mapped_column(Text)
    event_types: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    #: Fernet token of the Standard Webhooks signing secret.
    secret_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    enabled: Mapped[bool] = mapped_column(server_default="true")
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    disabled_at: Mapped[datetime | None]
    consecutive_failures: Mapped[int] = mapped_column(server_default="0")
    last_success_at: Mapped[datetime | None]
    last_failure_at: Mapped[datetime | None]
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]


class WebhookDeliveryLog(Base):
    """One delivery attempt, inbound (a provider notified us) or outbound (we notified a tenant).

    Partitioned by RANGE (created_at), one partition per UTC day, each by LIST (success) (0008):
    the table's key is (id, created_at, success); the mapper still identifies a row by ``id``.
    """

    __tablename__ = "webhook_delivery_log"
    __mapper_args__ = {"primary_key": ["id"]}  # noqa: RUF012 - SQLAlchemy reads it once
    __table_args__ = (
        Index("ix_webhook_delivery_log_store_id_created_at", "store_id", "created_at"),
        Index("ix_webhook_delivery_log_success_created_at", "success", "created_at"),
        Index("ix_webhook_delivery_log_direction_created_at", "direction", "created_at"),
    )

    id: Mapped[uuidpk]
    # Nullable: a notification for an unknown subscription is logged before any tenant is known.
    business_id: Mapped[optional_business_fk]
    store_id: Mapped[optional_store_fk]
    endpoint_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="SET NULL")
    )
    webhook_id: Mapped[str | None] = mapped_column(String(255))
    webhook_type: Mapped[str] = mapped_column(String(100))
    direction: Mapped[Direction] = mapped_column(
        str_enum(Direction, "direction"), server_default=Direction.INBOUND.value
    )
    attempt: Mapped[int] = mapped_column(server_default="1")
    success: Mapped[bool] = mapped_column(primary_key=True)
    response_code: Mapped[int | None]
    error_message: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(primary_key=True, server_default=func.now())


class WebhookHealthLog(Base):
    """A periodic health reading of one subscription: its 0..1 score and the patterns found.

    Partitioned by RANGE (checked_at), one partition per UTC day (0008): the table's key is
    (id, checked_at); the mapper still identifies a row by ``id``.
    """

    __tablename__ = "webhook_health_log"
    __mapper_args__ = {"primary_key": ["id"]}  # noqa: RUF012 - SQLAlchemy reads it once
    __table_args__ = (
        CheckConstraint("health_score >= 0 AND health_score <= 1", name="health_score_range"),
        Index("ix_webhook_health_log_subscription_id_checked_at", "subscription_id", "checked_at"),
        Index("ix_webhook_health_log_checked_at", "checked_at"),
    )

    id: Mapped[uuidpk]
    business_id: Mapped[business_fk]
    store_id: Mapped[store_fk]
    subscription_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE")
    )
    health_score: Mapped[float]
    success_rate: Mapped[float | None]
    deliveries_total: Mapped[int] = mapped_column(server_default="0")
    deliveries_failed: Mapped[int] = mapped_column(server_default="0")
    seconds_to_expiry: Mapped[int | None]
    renewal_failures: Mapped[int] = mapped_column(server_default="0")
    failure_patterns: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    details: Mapped[jsonb]
    checked_at: Mapped[datetime] = mapped_column(primary_key=True, server_default=func.now())
