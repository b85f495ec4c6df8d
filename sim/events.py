"""`EventLog`: the protocol events of one simulated run, kept compactly.

Why this exists: every replica records four events for each batch it agrees on
(pre-prepare, prepared, committed, execute): 16 rows per request at n = 4, 4n per batch at any
n. As dicts, with each replica's own copy of the batch digest's hex and of the request keys,
they were about 8 KB per committed request at n = 4, 40% of what a run keeps, and the main
reason its peak memory grew with its length. Here those four kinds are tuples that share
their repeated strings (`COMPACT`): about a third of the memory. Every other event (view
changes, checkpoints, crashes, faults ...) is a few rows per view or per fault and stays the
dict it was recorded as.

Readers ask for the kinds they need (`select`): the view, fault and checkpoint rows come from
their own list without walking the protocol rows, and protocol rows come back as the dicts
they were recorded as (lists where they held lists), in the order they were recorded.
Iterating the log gives every row that way; `==` compares it with another log or a list of
rows. Sharing changes no value: only strings and lists of strings are shared, and two equal
strings are interchangeable (numbers are not: 1 == 1.0 == True, which print differently).

Must not know: what any event means; the simulator decides what to record, readers what to
make of it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from itertools import islice
from typing import Any

__all__ = ["COMPACT", "EventLog"]

#: The events every replica records for every batch: kept as tuples.
COMPACT: frozenset[str] = frozenset({"pre-prepare", "prepared", "committed", "execute"})

#: How many distinct strings (and key tuples) one generation of the share table holds. The
#: replicas record a batch within a few round trips of each other, so recent values suffice:
#: two generations keep the table bounded however long the run.
_SHARED_KEPT = 4096

_HEAD = ("t", "node", "event")
_STRINGS = frozenset({str})


class EventLog:
    """The rows of one run's events, in the order they were recorded."""

    __slots__ = ("_others", "_rows", "_shapes", "_shared", "_shared_old")

    _shapes: dict[tuple[str, tuple[str, ...]], tuple[str, ...]]

    def __init__(self) -> None:
        # Every row: a COMPACT row as (keys, t, node, event, *values), where `keys` is the
        # shared tuple of its dict's keys and a tuple value stands for a list; any other row
        # as its dict.
        self._rows: list[tuple[Any, ...] | dict[str, Any]] = []
        self._others: list[dict[str, Any]] = []  # the dict rows, in order
        self._shapes = {}  # (event, field names) -> the row's keys, one tuple shared
        self._shared: dict[Any, Any] = {}
        self._shared_old: dict[Any, Any] = {}

    def add(self, t: int, node: str, event: str, fields: dict[str, Any]) -> None:
        """Record the row {"t": t, "node": node, "event": event, **fields}, without building
        it when the event is COMPACT (the log keeps no reference to `fields`)."""
        if event not in COMPACT:
            row = {"t": t, "node": node, "event": event, **fields}
            self._rows.append(row)
            self._others.append(row)
            return
        names = tuple(fields)
        shape = self._shapes.get((event, names))
        if shape is None:
            shape = self._shapes[(event, names)] = ("t", "node", "event", *names)
        shared = self._shared
        values: list[Any] = [shape, t, node, event]
        for value in fields.values():
            kind = type(value)
            if kind is str:
                got = shared.get(value)  # usually found: another replica recorded it
                value = got if got is not None else self._share(value)
            elif kind is list:
                value = tuple(value)
                # Only lists of strings are shared: a str equals only an equal str, while
                # 1 == 1.0 == True would hand back another value that prints differently.
                if _STRINGS.issuperset(map(type, value)):
                    got = shared.get(value)
                    value = got if got is not None else self._share(value)
            elif kind is tuple:  # would read back as a list
                raise TypeError(f"a {event} event holds a tuple; record a list")
            values.append(value)
        self._rows.append(tuple(values))

    def append(self, row: dict[str, Any]) -> None:
        """Record `row` ({"t", "node", "event", ...fields}: a row in any other key order is
        kept as it is)."""
        if tuple(islice(row, 3)) != _HEAD or row["event"] not in COMPACT:
            self._rows.append(row)
            self._others.append(row)
            return
        self.add(row["t"], row["node"], row["event"],
                 {k: v for k, v in row.items() if k not in _HEAD})

    def share(self, value: str) -> str:
        """The copy of string `value` this log keeps (for a caller that keeps it too)."""
        got = self._shared.get(value)
        return got if got is not None else self._share(value)  # type: ignore[no-any-return]

    def _share(self, value: str | tuple[str, ...]) -> Any:
        """An equal string (or tuple of strings) seen recently, or `value` itself with its
        strings shared, now remembered."""
        got = self._shared.get(value)
        if got is not None:
            return got
        got = self._shared_old.get(value)
        if got is None:
            got = value if type(value) is str else tuple([self._share(v) for v in value])
        if len(self._shared) >= _SHARED_KEPT:
            self._shared_old = self._shared
            self._shared = {}
        self._shared[value] = got
        return got

    def select(self, kinds: Collection[str]) -> Iterator[dict[str, Any]]:
        """The rows of events in `kinds`, in recorded order, each as the dict recorded."""
        if COMPACT.isdisjoint(kinds):
            for other in self._others:
                if other["event"] in kinds:
                    yield other
            return
        for row in self._rows:
            if isinstance(row, dict):
                if row["event"] in kinds:
                    yield row
            elif row[3] in kinds:
                yield _as_dict(row)

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
    out = dict(zip(row[0], row[1:], strict=True))
    for key, value in out.items():
        if type(value) is tuple:
            out[key] = list(value)
    return out
