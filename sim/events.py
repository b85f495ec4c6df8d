"""`EventLog`: the protocol events of one simulated run, kept compactly.

Why this exists: every replica records four events for each batch it agrees on
(pre-prepare, prepared, committed, execute): 16 rows per request at n = 4, 4n per batch at any
n. As dicts they were about 4.3 KB per committed request at n = 4, the largest thing a run
kept after the ledgers, and a reason its peak memory grew with its length. Here those four
kinds (`COMPACT`) are tuples of their values that share one tuple of keys per shape of row:
120-140 bytes a row instead of 270-360, and cheaper to record than the dict was. Every other
event (view changes, checkpoints, crashes, faults ...) is a few rows per view or per fault
and stays the dict it was recorded as. (The texts in the rows, the digest's hex and the
request keys, are one copy per batch already: node/pbft/normal_case.py remembers them.)

Readers ask for the kinds they need (`select`): the view, fault and checkpoint rows come from
their own list without walking the protocol rows, and protocol rows come back as the dicts
they were recorded as, in the order they were recorded. Iterating the log gives every row;
`==` compares it with another log or a list of rows.

Must not know: what any event means; the simulator decides what to record, readers what to
make of it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from itertools import islice
from operator import itemgetter
from typing import Any

__all__ = ["COMPACT", "EventLog"]

#: The events every replica records for every batch: kept as tuples.
COMPACT: frozenset[str] = frozenset({"pre-prepare", "prepared", "committed", "execute"})

_HEAD = ("t", "node", "event")


class EventLog:
    """The rows of one run's events, in the order they were recorded."""

    __slots__ = ("_others", "_rows", "_shapes")

    def __init__(self) -> None:
        # Every row: a COMPACT row as (keys, t, node, event, *values), where `keys` is the
        # shared tuple of its dict's keys; any other row as its dict.
        self._rows: list[tuple[Any, ...] | dict[str, Any]] = []
        self._others: list[dict[str, Any]] = []  # the dict rows, in order
        # (event, field names) -> the row's keys, one tuple for every row of that shape
        self._shapes: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}

    def add(self, t: int, node: str, event: str, fields: dict[str, Any]) -> None:
        """Record the row {"t": t, "node": node, "event": event, **fields}, without building
        it when the event is COMPACT (the values are kept, not copied)."""
        if event not in COMPACT:
            row = {"t": t, "node": node, "event": event, **fields}
            self._rows.append(row)
            self._others.append(row)
            return
        names = tuple(fields)
        shape = self._shapes.get((event, names))
        if shape is None:
            shape = self._shapes[(event, names)] = (*_HEAD, *names)
        self._rows.append((shape, t, node, event, *fields.values()))

    def append(self, row: dict[str, Any]) -> None:
        """Record `row` ({"t", "node", "event", ...fields}; a row whose keys start otherwise
        is kept as it is)."""
        if tuple(islice(row, 3)) != _HEAD or row["event"] not in COMPACT:
            self._rows.append(row)
            self._others.append(row)
            return
        self.add(row["t"], row["node"], row["event"],
                 {k: v for k, v in row.items() if k not in _HEAD})

    def _matching(self, kinds: Collection[str]) -> Iterator[tuple[Any, ...] | dict[str, Any]]:
        """The stored rows of events in `kinds`, in order (only the dict rows are walked when
        no COMPACT kind is asked for)."""
        rows = self._others if COMPACT.isdisjoint(kinds) else self._rows
        for row in rows:
            if (row["event"] if isinstance(row, dict) else row[3]) in kinds:
                yield row

    def select(self, kinds: Collection[str]) -> Iterator[dict[str, Any]]:
        """The rows of events in `kinds`, in recorded order, each as the dict recorded."""
        for row in self._matching(kinds):
            yield row if isinstance(row, dict) else _as_dict(row)

    def fields(self, kinds: Collection[str], names: tuple[str, ...]) -> Iterator[tuple[Any, ...]]:
        """For each row of events in `kinds`, in recorded order: the values of the fields
        `names` (KeyError if a row lacks one). `select` without building the rows: what the
        readers of every batch's events use."""
        getters: dict[tuple[str, ...], Callable[[tuple[Any, ...]], tuple[Any, ...]]] = {}
        for row in self._matching(kinds):
            if isinstance(row, dict):
                yield tuple([row[name] for name in names])
                continue
            get = getters.get(row[0])
            if get is None:
                get = getters[row[0]] = _getter(row[0], names)
            yield get(row)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for row in self._rows:
            yield row if isinstance(row, dict) else _as_dict(row)

    def __len__(self) -> int:
        return len(self._rows)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EventLog | list):
            return len(self) == len(other) and all(
                a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        return f"EventLog({len(self._rows)} rows)"


def _as_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    """The dict a COMPACT row stands for."""
    return dict(zip(row[0], row[1:], strict=True))


def _getter(shape: tuple[str, ...], names: tuple[str, ...]) -> Callable[
        [tuple[Any, ...]], tuple[Any, ...]]:
    """Takes the fields `names` of a COMPACT row of keys `shape`, as a tuple."""
    last = shape[::-1]  # a field that repeats a head key wins, as in the recorded dict
    try:  # + 1: the row starts with its keys
        at = [len(shape) - last.index(name) for name in names]
    except ValueError:
        missing = next(name for name in names if name not in shape)
        raise KeyError(missing) from None
    if len(at) < 2:  # itemgetter of one index gives the item, not a tuple
        return lambda row: tuple([row[i] for i in at])
    return itemgetter(*at)  # type: ignore[return-value]
