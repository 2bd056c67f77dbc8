"""Alerts: pure rules (``rules``) and their raising, deduplication and resolution (``store``)."""

from safeguards.alerts.rules import AlertThresholds
from safeguards.alerts.store import evaluate, raise_alert, resolve_alert

__all__ = ["AlertThresholds", "evaluate", "raise_alert", "resolve_alert"]
