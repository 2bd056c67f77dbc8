"""The benchmark harness: peers measured in the same run, ratios from interleaved rounds.

A benchmark module exposes ``BENCHMARKS``, a list of :class:`Benchmark`. Each benchmark's
``setup(quick)`` returns a :class:`Pair`: ``ours()`` and ``peer()`` each measure one round and
return a figure in the benchmark's unit (higher is better unless ``lower_is_better``). Rounds
alternate ours/peer/ours/peer… so machine noise (other processes, CPU frequency) hits both
alike; the reported ratio is the median of the per-round ratios, with the raw medians beside it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Pair:
    """One benchmark's two contestants, ready to measure; ``close`` frees what setup made."""

    ours: Callable[[], float]
    peer: Callable[[], float]
    close: Callable[[], None] = lambda: None
    #: Extra figures worth printing (e.g. a second peer), filled during rounds.
    notes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Benchmark:
    """What is compared, against whom, in which unit, and the goal for ours / peer."""

    name: str
    unit: str
    peer_name: str
    goal: float
    setup: Callable[[bool], Pair]
    #: For latencies and memory: a smaller figure is better, the goal is an upper bound.
    lower_is_better: bool = False


@dataclass(frozen=True)
class Result:
    """A finished benchmark: the median figures, the median per-round ratio, and the verdict."""

    bench: Benchmark
    ours: float
    peer: float
    ratio: float
    rounds: int
    notes: dict[str, str]

    @property
    def met(self) -> bool:
        """Whether the ratio meets the goal (``<=`` for lower-is-better benchmarks)."""
        if self.bench.lower_is_better:
            return self.ratio <= self.bench.goal
        return self.ratio >= self.bench.goal

    def line(self) -> str:
        """One line: name, ratio, goal, verdict, raw figures."""
        sign = "<=" if self.bench.lower_is_better else ">="
        verdict = "met" if self.met else "MISSED"
        return (
            f"{self.bench.name}: {self.ratio:.2f}x (goal {sign} {self.bench.goal:g}x, {verdict}); "
            f"ours {self.ours:,.1f} vs {self.bench.peer_name} {self.peer:,.1f} {self.bench.unit}"
        )


def run(bench: Benchmark, *, quick: bool, rounds: int) -> Result:
    """Measure ``rounds`` interleaved rounds of ``bench`` and reduce them to a Result."""
    pair = bench.setup(quick)
    ours: list[float] = []
    peers: list[float] = []
    try:
        for i in range(rounds):
            # Alternate who goes first, so neither always runs on a warmer (or hotter) machine.
            order = (pair.ours, pair.peer) if i % 2 == 0 else (pair.peer, pair.ours)
            figures = {id(f): f() for f in order}
            ours.append(figures[id(pair.ours)])
            peers.append(figures[id(pair.peer)])
    finally:
        pair.close()
    ratios = [o / p for o, p in zip(ours, peers, strict=True) if p > 0]
    return Result(
        bench,
        statistics.median(ours),
        statistics.median(peers),
        statistics.median(ratios) if ratios else float("nan"),
        rounds,
        dict(pair.notes),
    )
