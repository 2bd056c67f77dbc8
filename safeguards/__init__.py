"""The safeguards around every provider call; the seed's functions are the public API.

Any code may call them; ``tasks.base.SafeguardedTask`` is their main user.
"""

from safeguards.circuit_breaker.breaker import check_circuit_breaker, record_circuit_breaker_result
from safeguards.dead_letter.archive import (
    ArchivedJob,
    ArchiveFilter,
    discard,
    list_entries,
    move_to_dead_letter_queue,
    replay,
    replay_many,
    review,
)
from safeguards.delivery_log import log_webhook_delivery
from safeguards.rate_limit.limiter import check_rate_limit, record_rate_limit_request

__all__ = [
    "ArchiveFilter",
    "ArchivedJob",
    "check_circuit_breaker",
    "check_rate_limit",
    "discard",
    "list_entries",
    "log_webhook_delivery",
    "move_to_dead_letter_queue",
    "record_circuit_breaker_result",
    "record_rate_limit_request",
    "replay",
    "replay_many",
    "review",
]
