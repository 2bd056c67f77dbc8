"""The trigger that fills business_id from store_id and refuses a mismatch."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

import models
from syncguard.db import service_session
from tests.factories import make_business, make_store


def test_business_id_is_filled_from_the_store(engine: Engine) -> None:
    with service_session(engine) as session:
        business = make_business(session)
        store = make_store(session, business)
        job = models.SyncJob(store_id=store.id, kind="full", trigger="manual")
        session.add(job)
        session.flush()
        session.refresh(job)
        assert job.business_id == business.id


def test_a_mismatched_business_id_is_rejected(engine: Engine) -> None:
    with service_session(engine) as session:
        store = make_store(session, make_business(session, "Owner"))
        other = make_business(session, "Other")
        other_id, store_id = other.id, store.id
    with (
        pytest.raises(IntegrityError, match="does not match store") as raised,
        service_session(engine) as session,
    ):
        session.add(
            models.SyncedMessage(business_id=other_id, store_id=store_id, provider_message_id="x")
        )
    assert str(other_id) in str(raised.value)


def test_moving_a_row_to_another_business_store_is_rejected(engine: Engine) -> None:
    with service_session(engine) as session:
        first = make_store(session, make_business(session, "First"))
        second = make_store(session, make_business(session, "Second"))
        session.add(models.SyncJob(store_id=first.id, kind="full", trigger="manual"))
        first_id, second_id = first.id, second.id
    with (
        pytest.raises(IntegrityError, match="does not match store"),
        service_session(engine) as session,
    ):
        session.execute(
            text("UPDATE sync_jobs SET store_id = :new WHERE store_id = :old"),
            {"new": second_id, "old": first_id},
        )


def test_an_unknown_store_is_named_in_the_error(engine: Engine) -> None:
    import uuid

    missing = uuid.uuid4()
    with (
        pytest.raises(IntegrityError, match=f"store {missing} does not exist"),
        service_session(engine) as session,
    ):
        session.add(models.SyncJob(store_id=missing, kind="full", trigger="manual"))
