"""Small builders of committed rows for tests."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from models import Business, Provider, Store


def make_business(session: Session, name: str = "Acme") -> Business:
    """A new business with a unique slug."""
    business = Business(name=name, slug=f"{name.lower()}-{uuid.uuid4().hex[:8]}")
    session.add(business)
    session.flush()
    return business


def make_store(session: Session, business: Business, provider: Provider = Provider.GMAIL) -> Store:
    """A new store of ``business`` with a unique mailbox address."""
    store = Store(
        business_id=business.id,
        provider=provider,
        mailbox_address=f"shop-{uuid.uuid4().hex[:8]}@example.com",
    )
    session.add(store)
    session.flush()
    return store
