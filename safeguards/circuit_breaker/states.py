"""The circuit breaker's vocabulary: configuration (resilience4j names), decisions and statistics.

Pure values and parsing only; the state machine itself runs in ``circuit_breaker.lua`` so
that every decision is one atomic step shared by all workers and hosts.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from models.enums import CircuitState

#: Percentage of failed calls in the sliding window that opens the circuit.
DEFAULT_FAILURE_RATE_THRESHOLD = 50.0
#: Sliding-window size: the last N calls (count-based) or the last N seconds (time-based).
DEFAULT_SLIDING_WINDOW_SIZE = 20
#: Calls the window must hold before the failure rate may open the circuit.
DEFAULT_MINIMUM_NUMBER_OF_CALLS = 10
#: Failures in a row that open the circuit whatever the rate.
DEFAULT_CONSECUTIVE_FAILURE_THRESHOLD = 5
#: Seconds the circuit stays open after its first trip.
DEFAULT_WAIT_DURATION_IN_OPEN_STATE_S = 30.0
#: Factor the open wait grows by on each further trip (1.0 keeps it constant).
DEFAULT_OPEN_WAIT_MULTIPLIER = 2.0
#: Ceiling of the open wait, seconds.
DEFAULT_MAX_WAIT_DURATION_IN_OPEN_STATE_S = 600.0
#: Seconds the circuit must stay closed before the open wait starts again from the base.
DEFAULT_OPEN_WAIT_RESET_AFTER_S = 300.0
#: Trial calls let through while half-open.
DEFAULT_PERMITTED_NUMBER_OF_CALLS_IN_HALF_OPEN_STATE = 3
#: Seconds a half-open trial reservation lives if its worker never reports (died, was killed).
DEFAULT_TRIAL_RESERVATION_TIMEOUT_S = 120.0


class SlidingWindowType(enum.StrEnum):
    """How the failure-rate window is measured (resilience4j's two kinds)."""

    COUNT_BASED = "count"
    TIME_BASED = "time"


@dataclass(frozen=True)
class CircuitBreakerConfig:
    """How one kind of circuit trips and recovers; ``None`` switches a threshold off."""

    failure_rate_threshold: float | None = DEFAULT_FAILURE_RATE_THRESHOLD
    sliding_window_type: SlidingWindowType = SlidingWindowType.COUNT_BASED
    sliding_window_size: int = DEFAULT_SLIDING_WINDOW_SIZE
    minimum_number_of_calls: int = DEFAULT_MINIMUM_NUMBER_OF_CALLS
    consecutive_failure_threshold: int | None = DEFAULT_CONSECUTIVE_FAILURE_THRESHOLD
    wait_duration_in_open_state_s: float = DEFAULT_WAIT_DURATION_IN_OPEN_STATE_S
    open_wait_multiplier: float = DEFAULT_OPEN_WAIT_MULTIPLIER
    max_wait_duration_in_open_state_s: float = DEFAULT_MAX_WAIT_DURATION_IN_OPEN_STATE_S
    open_wait_reset_after_s: float = DEFAULT_OPEN_WAIT_RESET_AFTER_S
    permitted_number_of_calls_in_half_open_state: int = (
        DEFAULT_PERMITTED_NUMBER_OF_CALLS_IN_HALF_OPEN_STATE
    )
    #: Trial successes that close the circuit; ``None`` means every permitted trial.
    success_threshold: int | None = None
    trial_reservation_timeout_s: float = DEFAULT_TRIAL_RESERVATION_TIMEOUT_S

    def __post_init__(self) -> None:
        problems = [message for bad, message in self._checks() if bad]
        if problems:
            raise ValueError("invalid CircuitBreakerConfig: " + "; ".join(problems))

    def _checks(self) -> list[tuple[bool, str]]:
        rate = self.failure_rate_threshold
        permitted = self.permitted_number_of_calls_in_half_open_state
        return [
            (rate is not None and not 0 < rate <= 100, "failure_rate_threshold is a percentage"),
            (self.sliding_window_size < 1, "sliding_window_size must be >= 1"),
            (self.minimum_number_of_calls < 1, "minimum_number_of_calls must be >= 1"),
            (
                self.sliding_window_type is SlidingWindowType.COUNT_BASED
                and self.minimum_number_of_calls > self.sliding_window_size,
                "minimum_number_of_calls cannot exceed a count-based window",
            ),
            (
                (self.consecutive_failure_threshold or 1) < 1,
                "consecutive_failure_threshold must be >= 1",
            ),
            (self.wait_duration_in_open_state_s <= 0, "wait_duration_in_open_state_s must be > 0"),
            (self.open_wait_multiplier < 1, "open_wait_multiplier must be >= 1"),
            (
                self.max_wait_duration_in_open_state_s < self.wait_duration_in_open_state_s,
                "max_wait_duration_in_open_state_s is below the base wait",
            ),
            (self.open_wait_reset_after_s < 0, "open_wait_reset_after_s must be >= 0"),
            (permitted < 1, "permitted_number_of_calls_in_half_open_state must be >= 1"),
            (
                not 1 <= self.successes_to_close <= permitted,
                "success_threshold must be between 1 and the permitted half-open calls",
            ),
            (self.trial_reservation_timeout_s <= 0, "trial_reservation_timeout_s must be > 0"),
        ]

    @property
    def successes_to_close(self) -> int:
        """Trial successes that close a half-open circuit."""
        if self.success_threshold is None:
            return self.permitted_number_of_calls_in_half_open_state
        return self.success_threshold

    def open_wait_s(self, trip_in_streak: int) -> float:
        """The open wait of the k-th trip in a row: min(base * multiplier^(k-1), max)."""
        grown = self.wait_duration_in_open_state_s * self.open_wait_multiplier ** (
            trip_in_streak - 1
        )
        return min(grown, self.max_wait_duration_in_open_state_s)

    def script_args(self) -> list[Any]:
        """ARGV[3..14] of the Lua script, in its order (named at the script's top)."""
        return [
            self.failure_rate_threshold or 0,
            self.sliding_window_type.value,
            self.sliding_window_size,
            self.minimum_number_of_calls,
            self.consecutive_failure_threshold or 0,
            self.wait_duration_in_open_state_s,
            self.open_wait_multiplier,
            self.max_wait_duration_in_open_state_s,
            self.permitted_number_of_calls_in_half_open_state,
            self.successes_to_close,
            self.trial_reservation_timeout_s,
            self.open_wait_reset_after_s,
        ]


DEFAULT_CONFIG = CircuitBreakerConfig()


@dataclass(frozen=True)
class CircuitId:
    """Which circuit: a store's, or a business-wide one (``store_id`` None, e.g. an endpoint)."""

    store_id: uuid.UUID | None
    circuit_name: str
    business_id: uuid.UUID | None = None

    def __post_init__(self) -> None:
        if self.store_id is None and self.business_id is None:
            raise ValueError("a business-wide circuit needs business_id")

    @property
    def scope(self) -> str:
        """The Redis hash tag: the store, else the business."""
        return str(self.store_id or self.business_id)


@dataclass(frozen=True)
class CircuitStats:
    """One circuit's state and counters as Redis holds them."""

    state: CircuitState
    consecutive_failures: int = 0
    window_calls: int = 0
    failure_count: int = 0  # failures in the sliding window
    success_count: int = 0
    total_calls: int = 0
    total_failures: int = 0
    ignored_calls: int = 0
    not_permitted_calls: int = 0
    trip_count: int = 0
    half_open_calls: int = 0
    last_failure_reason: str | None = None
    last_failure_at: datetime | None = None
    last_success_at: datetime | None = None
    opened_at: datetime | None = None
    next_attempt_at: datetime | None = None
    state_changed_at: datetime | None = None

    @property
    def failure_rate(self) -> float:
        """Percentage of failures in the sliding window (0 when it is empty)."""
        return 100.0 * self.failure_count / self.window_calls if self.window_calls else 0.0


@dataclass(frozen=True)
class CircuitDecision:
    """The answer to "may I call?", with the detail the seed's JSONB carried."""

    allowed: bool
    retry_after_s: float
    state: CircuitState
    consecutive_failures: int
    failure_count: int
    total_calls: int  # calls in the sliding window
    failure_rate: float
    trip_count: int
    next_attempt_at: datetime | None
    #: True when this call holds one of the half-open trial slots.
    trial: bool = False
    #: Hand back to ``record`` so the outcome settles this very trial.
    trial_token: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (enum as its value, datetimes in ISO 8601)."""
        data = asdict(self)
        data["state"] = self.state.value
        data["next_attempt_at"] = self.next_attempt_at and self.next_attempt_at.isoformat()
        return data


@dataclass(frozen=True)
class ScriptReply:
    """What one run of the Lua script answered."""

    allowed: bool
    retry_after_s: float
    trial_token: str | None
    previous_state: CircuitState | None  # set only when this call made a transition
    stats: CircuitStats
    fields: dict[str, str]

    @property
    def decision(self) -> CircuitDecision:
        """The reply as a caller-facing decision."""
        s = self.stats
        return CircuitDecision(
            allowed=self.allowed,
            retry_after_s=self.retry_after_s,
            state=s.state,
            consecutive_failures=s.consecutive_failures,
            failure_count=s.failure_count,
            total_calls=s.window_calls,
            failure_rate=s.failure_rate,
            trip_count=s.trip_count,
            next_attempt_at=s.next_attempt_at,
            trial=self.trial_token is not None,
            trial_token=self.trial_token,
        )


_COUNTERS = (
    "consecutive_failures",
    "success_count",
    "total_calls",
    "total_failures",
    "ignored_calls",
    "not_permitted_calls",
    "trip_count",
    "half_open_calls",
)
_TIMES = ("last_failure_at", "last_success_at", "opened_at", "next_attempt_at", "state_changed_at")


def decode_text(raw: Any) -> str:
    """A Redis reply item as text."""
    return raw.decode() if isinstance(raw, bytes) else str(raw)


#: A brief reply's statistics: the state alone (counters read 0), one immutable value per state.
_BRIEF_STATS = {state: CircuitStats(state=state) for state in CircuitState}


def _time(value: str | None) -> datetime | None:
    return datetime.fromtimestamp(float(value), UTC) if value else None


def parse_reply(reply: list[Any]) -> ScriptReply:
    """Decode the script's flat reply (six values, then the hash's field/value pairs)."""
    allowed, retry_after, token, previous, calls, failures, *pairs = reply
    if len(pairs) == 2 and not previous:  # a brief reply: only the state, no transition
        state = CircuitState(decode_text(pairs[1]))
        return ScriptReply(
            allowed=bool(int(allowed)),
            retry_after_s=max(0.0, float(retry_after)),
            trial_token=decode_text(token) or None,
            previous_state=None,
            stats=_BRIEF_STATS[state],
            fields={"state": state.value},
        )
    fields = {decode_text(k): decode_text(v) for k, v in zip(pairs[::2], pairs[1::2], strict=True)}
    values: dict[str, Any] = {name: int(fields.get(name, 0)) for name in _COUNTERS}
    values.update({name: _time(fields.get(name)) for name in _TIMES})
    stats = CircuitStats(
        state=CircuitState(fields.get("state", CircuitState.CLOSED.value)),
        window_calls=int(calls),
        failure_count=int(failures),
        last_failure_reason=fields.get("last_failure_reason") or None,
        **values,
    )
    previous_text = decode_text(previous)
    return ScriptReply(
        allowed=bool(int(allowed)),
        retry_after_s=max(0.0, float(decode_text(retry_after))),
        trial_token=decode_text(token) or None,
        previous_state=CircuitState(previous_text) if previous_text else None,
        stats=stats,
        fields=fields,
    )
