"""Outbound events to businesses' endpoints: delivery (``delivery``), endpoints (``endpoints``),
the retry schedule (``schedule``) and Standard Webhooks signatures (``signing``)."""

from tasks.outbound.delivery import publish_event, register_endpoint

__all__ = ["publish_event", "register_endpoint"]
