"""The ids a log line carries without being passed by hand: bound once per task or request.

A context variable holds the current task's or request's ids (``task_id``, ``task_name``,
``job_id``, ``store_id``, ``business_id``, ``request_id``); the logging record factory
(``syncguard.logging_config``) copies them onto every record made while they are bound, so a
JSON line names its task or request whichever library logged it. Context variables follow the
asyncio task (one API request) and the thread (one Celery task in a worker child), so two
requests served at once never see each other's ids (PEP 567).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import MappingProxyType

__all__ = ["FIELDS", "bind", "bound", "current", "unbind"]

#: The fields a log line may carry from its context, in the order they are printed.
FIELDS = ("request_id", "task_id", "task_name", "job_id", "store_id", "business_id")

_CONTEXT: ContextVar[Mapping[str, str]] = ContextVar(
    "syncguard_log_context", default=MappingProxyType({})
)


def current() -> Mapping[str, str]:
    """The ids bound in this context (empty outside a task or request)."""
    return _CONTEXT.get()


def bind(**fields: object) -> Token[Mapping[str, str]]:
    """Add ``fields`` (``None`` values skipped, others as text) to this context's ids.

    Returns the token ``unbind`` takes to restore what was bound before. Raises ``ValueError``
    for a field not in ``FIELDS`` (a typo would otherwise be a silently missing field).
    """
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown log context field(s): {sorted(unknown)}")
    merged = {**_CONTEXT.get(), **{k: str(v) for k, v in fields.items() if v is not None}}
    return _CONTEXT.set(merged)


def unbind(token: Token[Mapping[str, str]]) -> None:
    """Restore the ids bound before the ``bind`` that returned ``token``."""
    _CONTEXT.reset(token)


@contextmanager
def bound(**fields: object) -> Iterator[None]:
    """``bind(**fields)`` for the duration of a ``with`` block."""
    token = bind(**fields)
    try:
        yield
    finally:
        unbind(token)
