"""Subscription renewals need no ledger rows of their own: Beat's renewal pass re-derives them
from ``webhook_subscriptions``, so a renewal message the broker lost is enqueued again once its
cooldown has passed (the claim tasks/recovery.py makes; issue 11, point 1).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, select, update

from models import Provider, WebhookSubscription
from providers.emulator.runner import EmulatorHandle, running_emulator
from syncguard.db import service_session
from tasks.renewal import renew_expiring_subscriptions
from tasks.webhooks import create_subscription
from tests.reliability.recovery_support import RECOVERY_ENV, group_worker, recovery_settings
from tests.sync_support import connect_store, emulator_env, eventually
from tests.worker import purge_queues

#: The renewal cooldown in this module, seconds (the product's is 300): longer than one pass
#: takes on a loaded machine (a pass also enqueues the creations of every store without a
#: subscription, hundreds in a long run), so the second pass still falls within it.
COOLDOWN = {"SYNCGUARD_RENEWAL_REQUEST_COOLDOWN_S": "5"}


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


@pytest.fixture(scope="module")
def env(emulator: EmulatorHandle) -> Iterator[dict[str, str]]:
    purge_queues()
    with recovery_settings(**COOLDOWN):
        yield {**emulator_env(emulator), **RECOVERY_ENV, **COOLDOWN}
    purge_queues()


def _subscription(engine: Engine, subscription_id: uuid.UUID) -> WebhookSubscription:
    with service_session(engine) as session:
        row = session.get(WebhookSubscription, subscription_id)
        assert row is not None
        return row


def _renewal_pass_picks(subscription_id: uuid.UUID) -> bool:
    return str(subscription_id) in renew_expiring_subscriptions()


def test_a_lost_renewal_is_enqueued_again_by_the_next_pass_after_its_cooldown(
    engine: Engine, emulator: EmulatorHandle, env: dict[str, str]
) -> None:
    store_id, _ = connect_store(engine, emulator, Provider.GMAIL)
    with group_worker(env):
        created = create_subscription.delay(str(store_id)).get(timeout=30)
    sub_id = uuid.UUID(created["subscription_id"])
    with service_session(engine) as session:  # watched two days ago: due for its daily renewal
        now = session.execute(select(func.now())).scalar_one()
        session.execute(
            update(WebhookSubscription)
            .where(WebhookSubscription.id == sub_id)
            .values(created_at=now - timedelta(days=2))
        )

    assert _renewal_pass_picks(sub_id)  # Beat's pass enqueues the renewal...
    purge_queues()  # ...and the broker loses it
    assert not _renewal_pass_picks(sub_id)  # within the cooldown: not asked for again
    eventually(lambda: _renewal_pass_picks(sub_id), timeout_s=20)  # the next pass after it is

    with group_worker(env):
        eventually(lambda: _subscription(engine, sub_id).renewal_count == 1, timeout_s=30)
    assert _subscription(engine, sub_id).last_renewed_at is not None
