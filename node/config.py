"""The protocol parameters: the one list of them, with units, defaults, bounds and meaning.

Why this exists: the same parameters are set from a scenario's `protocol:` block, a network
directory's network.json, the `medbft keys` and `medbft cluster` command lines and the
simulator; each of those should read names, defaults and bounds from here rather than list
them again. `PARAMETERS` is that list; `Config` (what a replica runs with) takes its defaults
and its validation from it.

What it must not know: the protocol's rules (node.pbft), files or command lines. Durations are
integer nanoseconds; the layers above parse "500ms" and convert units.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

__all__ = ["BY_ATTR", "BY_NAME", "PARAMETERS", "SCENARIO_PARAMETERS", "Config", "Parameter"]

_MAX_LIST_ITEMS = 1 << 16
"""The wire format's limit on the items of one list (node.messages): a batch carries at most
this many requests, a VIEW-CHANGE at most this many pre-prepared entries (4 per seq)."""


@dataclass(frozen=True, slots=True)
class Parameter:
    """One protocol parameter."""

    name: str
    """As in a scenario file's `protocol:` block (durations there take units: `500ms`)."""
    attr: str
    """Attribute name, on `Config` (replica side) or the scenario's ProtocolSpec."""
    unit: Literal["ns", "count", "bool"]
    default: int | bool
    low: int | None
    """Smallest allowed value (None: no bound, as for booleans)."""
    high: int | None
    """Largest allowed value (None: no bound)."""
    doc: str
    side: Literal["replica", "client"] = "replica"
    """Which core reads it: `Config` holds the replica-side parameters only."""
    scenario: bool = True
    """Settable in a scenario's `protocol:` block, and with it in a network directory's
    network.json and the `--protocol` options of `medbft keys init` and `medbft cluster` (the
    others are fixed per runtime). A parameter added with this set appears in all of them."""

    def check(self, value: object) -> None:
        """Raise ValueError naming this parameter and the bound `value` breaks (or its type)."""
        if self.unit == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{self.attr} must be true or false; got {value!r}")
            return
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{self.attr} must be an integer"
                             f"{' (ns)' if self.unit == 'ns' else ''}; got {value!r}")
        if self.low is not None and value < self.low:
            raise ValueError(f"{self.attr} must be >= {self.low}; got {value}")
        if self.high is not None and value > self.high:
            raise ValueError(f"{self.attr} must be <= {self.high}; got {value}")


PARAMETERS: tuple[Parameter, ...] = (
    Parameter("batch_size", "batch_size", "count", 1, 1, _MAX_LIST_ITEMS,
              "most requests the primary orders in one batch (one PRE-PREPARE, §4.2)"),
    Parameter("batch_timeout", "batch_timeout_ns", "ns", 0, 0, None,
              "how long the primary waits to fill a batch; 0 proposes what is pending at once"),
    Parameter("max_in_flight", "max_in_flight", "count", 16, 1, None,
              "batches proposed and not yet executed before the primary buffers requests "
              "(§4.2 batching)"),
    Parameter("checkpoint_interval", "checkpoint_interval", "count", 128, 1, None,
              "a checkpoint every this many sequence numbers (§4.3)"),
    Parameter("watermark_window", "watermark_window", "count", 256, 1, _MAX_LIST_ITEMS // 4,
              "log window L: seqs above the stable checkpoint h up to h + L are accepted (§4.3); "
              "at least checkpoint_interval"),
    Parameter("view_change_timeout", "view_change_timeout_ns", "ns", 500_000_000, 1, None,
              "how long a backup waits for a known request to execute before it starts a view "
              "change (§4.4); doubles per failed attempt, up to 16x (§4.5.2)"),
    Parameter("fetch_timeout", "fetch_timeout_ns", "ns", 100_000_000, 1, None,
              "how long a replica waits for fetched state or batch bodies before asking again, "
              "and lets a hole in its log fill before it catches up", scenario=False),
    Parameter("retransmit_timeout", "retransmit_timeout_ns", "ns", 100_000_000, 1, None,
              "how long the next slot may stall before a replica re-sends its part of it (§6.1)",
              scenario=False),
    Parameter("max_pending_requests", "max_pending_requests", "count", 100_000, 1, None,
              "requests a replica holds that are not ordered yet; further ones are dropped",
              scenario=False),
    Parameter("max_buffered_messages", "max_buffered_messages", "count", 8192, 0, None,
              "messages kept for a later view or above the window, an equal share per replica",
              scenario=False),
    Parameter("durable", "durable", "bool", False, None, None,
              "emit Persist effects (real mode); the simulator keeps state in memory instead",
              scenario=False),
    Parameter("durable_snapshot_every", "durable_snapshot_every", "count", 8, 1, None,
              "durable mode: stable checkpoints between two snapshots of the whole state "
              "written to disk (one reached by state transfer is always written); a restart "
              "replays the blocks executed since the last one", scenario=False),
    Parameter("client_timeout", "client_timeout_ns", "ns", 1_000_000_000, 1, None,
              "how long a client waits for f+1 matching replies before it sends the request "
              "to every replica (§4.1)", side="client"),
)

BY_NAME: dict[str, Parameter] = {p.name: p for p in PARAMETERS}
BY_ATTR: dict[str, Parameter] = {p.attr: p for p in PARAMETERS}
SCENARIO_PARAMETERS: tuple[Parameter, ...] = tuple(p for p in PARAMETERS if p.scenario)
"""The ones a scenario's `protocol:` block, network.json and `--protocol` options set."""


def _default(attr: str) -> Any:
    return BY_ATTR[attr].default


@dataclass(frozen=True)
class Config:
    """The replica-side protocol parameters (`PARAMETERS` with side "replica"): defaults and
    bounds come from that table. Raises ValueError naming the parameter and the bound."""

    batch_size: int = _default("batch_size")
    batch_timeout_ns: int = _default("batch_timeout_ns")
    max_in_flight: int = _default("max_in_flight")
    checkpoint_interval: int = _default("checkpoint_interval")
    watermark_window: int = _default("watermark_window")
    view_change_timeout_ns: int = _default("view_change_timeout_ns")
    fetch_timeout_ns: int = _default("fetch_timeout_ns")
    retransmit_timeout_ns: int = _default("retransmit_timeout_ns")
    max_pending_requests: int = _default("max_pending_requests")
    max_buffered_messages: int = _default("max_buffered_messages")
    durable: bool = _default("durable")
    durable_snapshot_every: int = _default("durable_snapshot_every")

    def __post_init__(self) -> None:
        for p in _REPLICA_SIDE:
            p.check(getattr(self, p.attr))
        if self.watermark_window < self.checkpoint_interval:
            raise ValueError(f"watermark_window must be >= checkpoint_interval "
                             f"({self.checkpoint_interval}); got {self.watermark_window}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Config:
        """A Config from values by attribute name (`batch_timeout_ns`, ...), e.g. a scenario's
        protocol block as parsed; absent ones take their defaults. Client-side parameters
        (`client_timeout_ns`) are checked, then skipped: they configure the client. Raises
        ValueError for an unknown name or a value out of bounds."""
        unknown = sorted(k for k in values if k not in BY_ATTR)
        if unknown:
            raise ValueError(f"unknown protocol parameter(s) {', '.join(unknown)}; known: "
                             f"{', '.join(p.attr for p in PARAMETERS)}")
        for k, v in values.items():
            if BY_ATTR[k].side == "client":
                BY_ATTR[k].check(v)
        return cls(**{k: v for k, v in values.items() if BY_ATTR[k].side == "replica"})


_REPLICA_SIDE = tuple(p for p in PARAMETERS if p.side == "replica")
assert [f.name for f in fields(Config)] == [p.attr for p in _REPLICA_SIDE], \
    "Config's fields must be the replica-side PARAMETERS, in order"

