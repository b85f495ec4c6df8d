"""Measurements of a run, computed from what the simulator recorded (never from clocks inside
the cores): request latencies, throughput, message and byte counts by type and node.

Why this exists: summary.json and requests.csv are the project's published results; every
number in them is derived here, in one place, with its definition next to it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["RequestRecord", "Traffic", "latency_stats", "percentile"]


@dataclass(slots=True)
class RequestRecord:
    client: str
    session: int
    timestamp: int
    submit_ns: int
    commit_ns: int | None = None
    view: int | None = None
    seq: int | None = None

    @property
    def key(self) -> str:
        return f"{self.client}/{self.session}/{self.timestamp}"

    @property
    def latency_ns(self) -> int | None:
        return None if self.commit_ns is None else self.commit_ns - self.submit_ns


class Traffic:
    """Messages put on the network (a replica never sends to itself), by type and by node.

    `count` runs once per simulated message, so it only bumps one counter pair per (sender,
    type); the totals and the by-type and by-node tables are sums over those pairs, taken
    when read."""

    __slots__ = ("_pairs", "lost")

    def __init__(self) -> None:
        self.lost = 0
        # (sender, type) -> [messages, bytes]
        self._pairs: dict[tuple[str, str], list[int]] = {}

    def count(self, src: str, kind: str, nbytes: int) -> None:
        pair = self._pairs.get((src, kind))
        if pair is None:
            self._pairs[(src, kind)] = [1, nbytes]
        else:
            pair[0] += 1
            pair[1] += nbytes

    def count_many(self, src: str, kind: str, messages: int, nbytes: int) -> None:
        """`count` for `messages` messages of `nbytes` bytes in all (a multicast's copies)."""
        pair = self._pairs.get((src, kind))
        if pair is None:
            self._pairs[(src, kind)] = [messages, nbytes]
        else:
            pair[0] += messages
            pair[1] += nbytes

    def _table(self, by: int, column: int) -> dict[str, int]:
        table: dict[str, int] = {}
        for key, counts in self._pairs.items():
            table[key[by]] = table.get(key[by], 0) + counts[column]
        return table

    @property
    def total(self) -> int:
        return sum(c[0] for c in self._pairs.values())

    @property
    def bytes(self) -> int:
        return sum(c[1] for c in self._pairs.values())

    @property
    def by_type(self) -> dict[str, int]:
        return self._table(1, 0)

    @property
    def bytes_by_type(self) -> dict[str, int]:
        return self._table(1, 1)

    @property
    def by_node(self) -> dict[str, int]:
        return self._table(0, 0)

    @property
    def bytes_by_node(self) -> dict[str, int]:
        return self._table(0, 1)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    if not sorted_values:
        return math.nan
    k = (len(sorted_values) - 1) * p / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def latency_stats(latencies_ns: Sequence[int]) -> dict[str, float | None]:
    """p50/p95/p99/mean/max in milliseconds (None when nothing was settled)."""
    if not latencies_ns:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    ms = sorted(v / 1e6 for v in latencies_ns)
    return {
        "p50": round(percentile(ms, 50), 6),
        "p95": round(percentile(ms, 95), 6),
        "p99": round(percentile(ms, 99), 6),
        "mean": round(sum(ms) / len(ms), 6),
        "max": round(ms[-1], 6),
    }
