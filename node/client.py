"""The PBFT client as a sans-I/O state machine (OSDI '99 §4.1).

Why this exists: the simulator's workload and the real `medbft load` command must behave
alike: sign requests, send them to the replica believed to be primary, accept a result once
f+1 replicas send matching replies, and on timeout retransmit to all replicas. Keeping that
logic free of I/O lets both drive it and lets tests check it on its own.

One client identity may run several sessions, each with at most one request in flight (the
paper's one-outstanding-request client); timestamps are per-session counters, which are as
good as clocks for exactly-once and need no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from node import messages as m
from node.crypto import Keyring
from node.envelope import open_envelope
from node.events import CancelTimer, Receive, Send, SetTimer, Timeout, Trace
from node.membership import Membership
from node.messages import DecodeError
from node.quorum import primary_of, reply_quorum

__all__ = ["Accepted", "Client"]


@dataclass(frozen=True, slots=True)
class Accepted:
    """Effect: a request's result is settled (f+1 matching replies)."""

    session: int
    timestamp: int
    result: bytes
    view: int
    replies: int = 0
    """How many matching replies settled it (f+1 unless more arrived at once)."""


@dataclass(slots=True)
class _Outstanding:
    request: m.Request
    encoded: bytes
    replies: dict[int, tuple[bytes, int]] = field(default_factory=dict)
    retransmissions: int = 0


ClientEffect = Send | SetTimer | CancelTimer | Trace | Accepted


class Client:
    """Signs, sends and settles requests for one client identity."""

    def __init__(self, membership: Membership, keyring: Keyring, timeout_ns: int) -> None:
        self.membership = membership
        self.keys = keyring
        self.costs = keyring.costs
        self.id = keyring.id
        self.timeout_ns = timeout_ns
        self.n = membership.n
        self.ids = membership.node_ids
        self.needed = reply_quorum(self.n)
        self.view = 0
        self.timestamps: dict[int, int] = {}
        self.outstanding: dict[int, _Outstanding] = {}
        self.dropped: dict[str, int] = {}

    def submit(self, session: int, op: bytes) -> list[ClientEffect]:
        """Sign `op` as the next request of `session` and send it to the primary."""
        if session in self.outstanding:
            raise RuntimeError(f"session {session} already has a request in flight")
        ts = self.timestamps.get(session, 0) + 1
        self.timestamps[session] = ts
        unsigned = m.Request(op, ts, self.id, session, b"")
        # unsigned() is remembered: the replicas that check the signature reuse its bytes
        req = m.Request(op, ts, self.id, session, self.keys.sign(unsigned.unsigned()))
        payload = m.encode(req)
        out = _Outstanding(req, payload)
        self.outstanding[session] = out
        primary = self.ids[primary_of(self.view, self.n)]
        return [
            Send(primary, m.encode(m.Envelope(self.id, payload, b"")), "REQUEST"),
            SetTimer(_timer(session), self.timeout_ns),
        ]

    def step(self, event: Receive | Timeout, now_ns: int = 0) -> list[ClientEffect]:
        """Feed a reply or a retransmission timer; `now_ns` is unused (kept for the runtime)."""
        if type(event) is Receive:
            return self._on_receive(event.data)
        if type(event) is Timeout:
            return self._on_timeout(event.key)
        raise TypeError(f"unknown event {event!r}")

    def _drop(self, reason: str) -> list[ClientEffect]:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        return [Trace("drop", {"reason": reason, "kind": "REPLY"})]

    def _on_receive(self, data: bytes) -> list[ClientEffect]:
        # The MAC is checked before the reply is decoded (as replicas do): forged bytes cost
        # one MAC, never a parse.
        # A reply sealed in this process for us (a simulation): its sender, payload and MAC
        # check are known from where it was sealed (Keyring.open_sealed).
        opened = self.keys.open_sealed(data)
        index = None if opened is None else self.membership.index_of(opened[0])
        if opened is not None and index is not None:
            self.costs.mac += 1
            sender, payload = opened
        else:
            try:
                sender, payload, mac = open_envelope(data)
            except DecodeError:
                return self._drop(_not_an_envelope(data))
            index = self.membership.index_of(sender)
            if index is None:
                return self._drop("not a reply from a replica")
            if not self.keys.check_mac(sender, sender.encode() + b"\x00" + payload, mac):
                return self._drop("bad MAC")
        try:
            reply = m.decode(payload)
        except DecodeError:
            return self._drop("malformed")
        if type(reply) is not m.Reply:
            return self._drop("not a reply from a replica")
        if reply.replica != index or reply.client != self.id:
            return self._drop("reply fields do not match sender")
        out = self.outstanding.get(reply.session)
        if out is None or out.request.timestamp != reply.timestamp:
            return []  # a late or duplicate reply to a settled request
        out.replies[index] = (reply.result, reply.view)
        matching = [v for r, v in out.replies.values() if r == reply.result]
        if len(matching) < self.needed:
            return []
        del self.outstanding[reply.session]
        self.view = max(self.view, sorted(matching)[-self.needed])
        return [
            CancelTimer(_timer(reply.session)),
            Accepted(reply.session, reply.timestamp, reply.result, self.view, len(matching)),
        ]

    def _on_timeout(self, key: str) -> list[ClientEffect]:
        session = int(key.split(":", 1)[1])
        out = self.outstanding.get(session)
        if out is None:
            return []
        # §4.1: on timeout the client broadcasts the request to all replicas.
        out.retransmissions += 1
        effects: list[ClientEffect] = [
            Send(rid, m.encode(m.Envelope(self.id, out.encoded, b"")), "REQUEST")
            for rid in self.ids
        ]
        effects.append(Trace("retransmit", {"session": session,
                                            "timestamp": out.request.timestamp}))
        effects.append(SetTimer(key, self.timeout_ns))
        return effects


def _not_an_envelope(data: bytes) -> str:
    """Why bytes that are not one well-formed Envelope were dropped."""
    try:
        m.decode(data)
    except DecodeError:
        return "malformed"
    return "not an envelope"


def _timer(session: int) -> str:
    return f"retry:{session}"
