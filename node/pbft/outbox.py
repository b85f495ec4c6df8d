"""How a replica's decisions leave it: the effects of one step, in order.

Why this exists: every part of the replica sends, traces, drops messages and sets timers. This
is the one place that turns those decisions into `Effect`s (each message sealed in an envelope
with a MAC for its receiver), that counts dropped messages by reason (`dropped`, read by
metrics) and that remembers which timers are set.

What it must not know: any protocol rule. It never decides whether to send, only how.
"""

from __future__ import annotations

from typing import Any, Final

from node import messages as m
from node.crypto import Keyring
from node.envelope import envelope_head, envelope_prefix, seal_envelope
from node.events import CancelTimer, Effect, Multicast, Persist, Send, SetTimer, Trace
from node.messages import Message

# The effect types as Final names: compiled, a Final module constant is a C static, where any
# other module-level name is a dictionary lookup on every use (every message sends or traces).
_SEND: Final = Send
_MULTICAST: Final = Multicast
_TRACE: Final = Trace

__all__ = ["BENIGN_DROPS", "Outbox"]

# Timer names (a Timeout event carries one back).
T_BATCH: Final = "batch"
T_VIEW_CHANGE: Final = "view-change"
T_FETCH: Final = "fetch"
T_CATCH_UP: Final = "catch-up"
T_RETRANSMIT: Final = "retransmit"

BENIGN_DROPS = frozenset({
    "old view", "below low watermark", "buffered", "buffer full", "duplicate pre-prepare",
    "request older than last reply", "old view-change", "old new-view", "pending requests full",
    "checkpoint at a non-checkpoint sequence number",
})
"""Drop reasons that honest traffic produces (late, duplicate or early messages)."""


class Outbox:
    """The effects of the step in progress (`effects`, replaced by the replica at each step),
    the `Persist` records that go before them, the timers set and the drop counters."""

    def __init__(self, replica_id: str, me: int, ids: tuple[str, ...], keys: Keyring) -> None:
        self.me = me
        self.ids = ids
        self.keys = keys
        self.effects: list[Effect] = []
        self.persisted: list[Effect] = []
        self.timers: set[str] = set()
        self.dropped: dict[str, int] = {}
        self.now_ns = 0
        """The time of the event being processed (a proposal's timestamp reads it)."""
        self._env_prefix = envelope_prefix(replica_id)
        self._mac_prefix = replica_id.encode() + b"\x00"
        self._others = tuple(r for i, r in enumerate(ids) if i != me)
        # In a simulation, every message sealed here is remembered with the session key of its
        # MAC, its sender and its payload, so its receiver opens it without reading it or
        # computing the MAC (Keyring.open_sealed). Sound because each envelope is built here
        # from one replica id and one payload: its sender field (`_env_prefix`), its payload
        # and the bytes its MAC covers (`_mac_prefix` + payload) agree, and those are exactly
        # what a receiver reads from the bytes and what its check covers.
        self._seals = keys.seals
        self._id = replica_id

    def trace(self, event: str, **fields: Any) -> None:
        self.effects.append(_TRACE(event, fields))

    def drop(self, reason: str, sender: str = "", kind: str = "") -> None:
        """Count and trace an ignored message. `bad` marks reasons only a faulty or forged
        message can have; the rest (stale, duplicate, early) happen to honest traffic too."""
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self.effects.append(_TRACE("drop", {"reason": reason, "from": sender, "kind": kind,
                                           "bad": reason not in BENIGN_DROPS}))

    def _envelope(self, to: str, payload: bytes) -> bytes:
        mac = self.keys.mac(to, self._mac_prefix + payload)
        sealed = seal_envelope(self._env_prefix, payload, mac)
        if self._seals:
            self.keys.remember_sealed((to,), (sealed,), self._id, payload)
        return sealed

    def send(self, to: int | str, msg: Message) -> None:
        """To a replica (by index) or a client (by id)."""
        to_id = self.ids[to] if isinstance(to, int) else to
        self.effects.append(_SEND(to_id, self._envelope(to_id, m.encode(msg)), msg.KIND))

    def bcast(self, msg: Message) -> None:
        """Multicast to every other replica: point-to-point copies, one MAC each, as one
        `Multicast` effect."""
        payload = m.encode(msg)
        kind = msg.KIND
        others = self._others
        # each receiver's MAC covers our id and the payload; the copies differ only in it
        tags = self.keys.macs(others, self._mac_prefix + payload)
        head = envelope_head(self._env_prefix, payload)
        copies = tuple([head + tag for tag in tags])
        if self._seals:
            self.keys.remember_sealed(others, copies, self._id, payload)
        self.effects.append(_MULTICAST(others, copies, kind))

    def set_timer(self, key: str, delay_ns: int) -> None:
        self.timers.add(key)
        self.effects.append(SetTimer(key, delay_ns))

    def cancel_timer(self, key: str) -> None:
        if key in self.timers:
            self.timers.discard(key)
            self.effects.append(CancelTimer(key))

    def persist(self, key: str, data: bytes, digest: bytes = b"") -> None:
        """A durable record (real mode): it goes first in the step's output, so it is on disk
        before anything the step sends (node.pbft.durable describes the records; `digest`:
        a block record's batch digest)."""
        self.persisted.append(Persist(key, data, digest))
