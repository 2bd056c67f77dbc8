"""The retry delay function, without a broker."""

from __future__ import annotations

import random

import pytest

from safeguards.backoff import compute_backoff


def test_without_jitter_the_delay_doubles_up_to_the_ceiling() -> None:
    delays = [compute_backoff(a, base_s=1, max_backoff_s=10, jitter=False) for a in range(6)]
    assert delays == [1, 2, 4, 8, 10, 10]


def test_full_jitter_stays_within_zero_and_the_ceiling() -> None:
    rng = random.Random(7)
    for attempt in range(12):
        ceiling = min(60.0, 2.0 * 2**attempt)
        samples = [compute_backoff(attempt, max_backoff_s=60, rng=rng) for _ in range(200)]
        assert all(0.0 <= s <= ceiling for s in samples)
        # Jitter really spreads: samples cover most of the range, not one point.
        assert max(samples) - min(samples) > ceiling * 0.5


def test_huge_attempts_do_not_overflow() -> None:
    assert compute_backoff(10_000, max_backoff_s=30, jitter=False) == 30


def test_negative_attempt_is_an_error() -> None:
    with pytest.raises(ValueError, match="attempt must be >= 0"):
        compute_backoff(-1)
