"""Events into and effects out of the sans-I/O cores (`Replica`, `Client`).

Why this exists: the cores never touch sockets, clocks or timers. A runtime (the simulator's
or the real asyncio node) feeds them events and carries out the effects they return, so the
same protocol code runs in both modes and in tests that assert on effects directly.
Time is an input: every `step` receives the current time in integer nanoseconds.

Events and effects are slotted dataclasses but not frozen: one or two are made for every
message, and a frozen dataclass costs three times as much to build. Treat them as read-only
records all the same (they hash by value, like frozen ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "CancelTimer",
    "Effect",
    "Event",
    "Multicast",
    "Persist",
    "Receive",
    "Send",
    "SetTimer",
    "Start",
    "Timeout",
    "Trace",
    "sends",
]


# -- events -----------------------------------------------------------------------------------


@dataclass(slots=True, unsafe_hash=True)
class Receive:
    """Bytes arrived from the network (an encoded `Envelope`; untrusted)."""

    data: bytes


@dataclass(slots=True, unsafe_hash=True)
class Timeout:
    """A timer set earlier with `SetTimer(key, ...)` fired."""

    key: str


@dataclass(frozen=True, slots=True)
class Start:
    """The runtime started (or restarted after a crash, `recovering=True`)."""

    recovering: bool = False


Event = Receive | Timeout | Start


# -- effects ----------------------------------------------------------------------------------


@dataclass(slots=True, unsafe_hash=True)
class Send:
    """Send `data` (an encoded, authenticated Envelope) to party `to`. `kind` names the inner
    message type (e.g. 'PREPARE') for metrics."""

    to: str
    data: bytes
    kind: str


@dataclass(slots=True, unsafe_hash=True)
class Multicast:
    """Send one message to several parties: `data[i]` (its own envelope, whose MAC is for
    `to[i]`) to `to[i]`. Exactly the `Send`s it expands to (`sends`), as one effect, so that a
    transport able to put a multicast on the wire in one go (the simulator's; the MQTT
    transport's fan-out) need not handle n - 1 effects one by one. A runtime whose transport
    cannot sends the copies in order."""

    to: tuple[str, ...]
    data: tuple[bytes, ...]
    kind: str

    def sends(self) -> list[Send]:
        kind = self.kind
        return [Send(to, data, kind) for to, data in zip(self.to, self.data, strict=True)]


@dataclass(slots=True, unsafe_hash=True)
class SetTimer:
    """(Re)arm timer `key` to fire after `delay_ns`; replaces an armed timer of that key."""

    key: str
    delay_ns: int


@dataclass(slots=True, unsafe_hash=True)
class CancelTimer:
    key: str


@dataclass(slots=True, unsafe_hash=True)
class Trace:
    """Something worth recording happened. `event` names it; `fields` are JSON-able values.

    The checker and metrics are built on these (e.g. 'execute' with seq, view, digest and the
    executed request keys; 'drop' with a reason)."""

    event: str
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Persist:
    """Write `data` under `key` to durable storage before carrying out any later effect of the
    same step (so nothing is sent that a restart could forget). Emitted only when the replica
    runs with `Config(durable=True)` (real mode). Keys: 'votes' (the view and the low
    watermark h, `seq`), 'vote' (what this replica pre-prepared and prepared at one seq,
    `seq`, above h; with 'votes', what safety needs across a restart: node.pbft.durable),
    'checkpoint' (the stable checkpoint: proof and snapshot, an encoded StateData), 'block'
    (one executed batch, an encoded CommittedBatch; append-only). A block record also carries
    its batch's digest, which the replica has already computed, so storage need not decode
    the record to index it (empty for other keys)."""

    key: str
    data: bytes
    digest: bytes = b""
    seq: int = 0


Effect = Send | Multicast | SetTimer | CancelTimer | Trace | Persist


def sends(effects: list[Effect]) -> list[Effect]:
    """`effects` with every `Multicast` replaced by the `Send`s it stands for, in order: for
    readers that look at messages one by one (tests, a Byzantine shell that rewrites them)."""
    if not any(type(eff) is Multicast for eff in effects):
        return effects
    out: list[Effect] = []
    for eff in effects:
        if type(eff) is Multicast:
            out += eff.sends()
        else:
            out.append(eff)
    return out
