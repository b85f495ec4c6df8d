"""An in-memory cluster that steps replicas by hand: no time, no asyncio, full control.

Why this exists: the second layer of tests (and step-by-step teaching) needs to decide exactly
which message is delivered, dropped or held, and when a timer fires. Messages wait in a FIFO
queue; `deliver_all()` runs until nothing is left; `cut`, `isolate` and `heal` shape links;
`intercept` lets a test rewrite or drop outgoing messages (a Byzantine hook).

It shares nothing with the virtual-time simulator except the cores themselves.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from node.client import Accepted, Client, ClientEffect
from node.config import Config
from node.crypto import Costs, Identity, Keyring, VerifyCache
from node.events import (
    CancelTimer,
    Effect,
    Persist,
    Receive,
    Send,
    SetTimer,
    Start,
    Timeout,
    Trace,
    sends,
)
from node.membership import Member, Membership
from node.pbft import Replica
from node.pbft.durable import join_votes
from node.statemachine import KeyValueStore

__all__ = ["InMemoryCluster", "Packet", "make_membership"]


@dataclass(slots=True)
class Packet:
    src: str
    dst: str
    data: bytes
    kind: str


def make_membership(
    n: int, clients: int = 1, seed: bytes = b"medbft", roles: tuple[str, ...] = ()
) -> tuple[Membership, dict[str, Identity]]:
    """A membership of replicas `r0..r{n-1}` and clients `client-1..`, keys from `seed`."""
    ids = [f"r{i}" for i in range(n)]
    cids = [f"client-{i + 1}" for i in range(clients)]
    idents = {i: Identity.from_seed(i, seed) for i in ids + cids}
    roles = roles or tuple("hospital" for _ in ids)
    nodes = tuple(Member(i, roles[k], idents[i].public_bytes) for k, i in enumerate(ids))
    cls = tuple(Member(c, "client", idents[c].public_bytes) for c in cids)
    return Membership(nodes, cls), idents


@dataclass
class InMemoryCluster:
    """n replicas and some clients wired through a hand-driven queue."""

    n: int = 4
    clients: int = 1
    config: Config = field(default_factory=Config)
    client_timeout_ns: int = 1_000_000_000

    def __post_init__(self) -> None:
        self.membership, idents = make_membership(self.n, self.clients)
        self.idents = idents
        cache = self.cache = VerifyCache()
        pubs = self.membership.public_keys()
        self.replicas: dict[str, Replica] = {}
        for member in self.membership.nodes:
            self.replicas[member.id] = self._new_replica(member.id)
        self.disk: dict[str, dict[str, list[bytes]]] = {r: {} for r in self.replicas}
        # The batch digest each block record was persisted with, in the order persisted (a
        # test that swaps a replica's `disk` for another keeps these as they were).
        self.block_digests: dict[str, list[bytes]] = {r: [] for r in self.replicas}
        # Each replica's `vote` rows above its h, by seq; its disk["votes"] holds them joined
        # with the latest head, the record a restart reads.
        self.vote_rows: dict[str, dict[int, bytes]] = {r: {} for r in self.replicas}
        self.vote_heads: dict[str, bytes] = {r: b"" for r in self.replicas}
        self.client_cores: dict[str, Client] = {
            c.id: Client(self.membership, Keyring(idents[c.id], pubs, Costs(), cache),
                         self.client_timeout_ns)
            for c in self.membership.clients
        }
        self.queue: deque[Packet] = deque()
        self.timers: dict[str, dict[str, int]] = {p: {} for p in self.parties}
        self.traces: list[tuple[str, Trace]] = []
        self.accepted: list[tuple[str, Accepted]] = []
        self.sent: list[Packet] = []
        self.cut_links: set[tuple[str, str]] = set()
        self.crashed: set[str] = set()
        self.intercept: Callable[[Packet], list[Packet]] | None = None
        self.now_ns = 0
        for rid in self.replicas:
            self._apply(rid, sends(self.replicas[rid].step(Start(), self.now_ns)))

    def _new_replica(self, rid: str) -> Replica:
        keys = Keyring(self.idents[rid], self.membership.public_keys(), Costs(), self.cache)
        return Replica(self.membership, rid, keys, KeyValueStore(), self.config)

    @property
    def parties(self) -> list[str]:
        return list(self.membership.node_ids) + [c.id for c in self.membership.clients]

    # -- driving ------------------------------------------------------------------------------

    def submit(self, op: bytes, client: str = "client-1", session: int = 0) -> None:
        self._apply(client, self.client_cores[client].submit(session, op))

    def deliver_one(self) -> Packet | None:
        while self.queue:
            pkt = self.queue.popleft()
            if (pkt.src, pkt.dst) in self.cut_links or pkt.dst in self.crashed:
                continue
            self._receive(pkt)
            return pkt
        return None

    def deliver_all(self, limit: int = 1_000_000) -> int:
        count = 0
        while self.deliver_one() is not None:
            count += 1
            if count >= limit:
                raise RuntimeError("deliver_all did not quiesce")
        return count

    def fire(self, party: str, key: str) -> None:
        """Fire an armed timer now (tests decide when time passes)."""
        if key not in self.timers[party]:
            raise KeyError(f"{party} has no timer {key!r} armed: {sorted(self.timers[party])}")
        del self.timers[party][key]
        self._event(party, Timeout(key))

    def advance(self, delay_ns: int) -> None:
        """Move time forward, firing every timer that falls due, in order."""
        target = self.now_ns + delay_ns
        while True:
            due = sorted((t, p, k) for p, ts in self.timers.items() for k, t in ts.items()
                         if t <= target and p not in self.crashed)
            if not due:
                break
            when, party, key = due[0]
            self.now_ns = when
            del self.timers[party][key]
            self._event(party, Timeout(key))
            self.deliver_all()
        self.now_ns = target

    # -- shaping the network ------------------------------------------------------------------

    def cut(self, a: str, b: str) -> None:
        self.cut_links |= {(a, b), (b, a)}

    def isolate(self, party: str) -> None:
        for other in self.parties:
            if other != party:
                self.cut(party, other)

    def heal(self) -> None:
        self.cut_links.clear()

    def crash(self, party: str) -> None:
        self.crashed.add(party)
        self.timers[party].clear()

    def recover(self, party: str) -> None:
        self.crashed.discard(party)
        self._apply(party, sends(self.replicas[party].step(Start(recovering=True),
                                                          self.now_ns)))

    def restart_from_disk(self, party: str) -> Replica:
        """Replace a crashed replica by a fresh one rebuilt from its Persist records (needs
        `Config(durable=True)`), then start it recovering: a process restart after SIGKILL."""
        disk = self.disk[party]
        # The rows are in disk["votes"] (joined); the restored replica writes its own again.
        self.vote_rows[party] = {}
        self.vote_heads[party] = b""
        replica = self._new_replica(party)
        votes, checkpoint, stable = disk.get("votes"), disk.get("checkpoint"), disk.get("stable")
        replica.restore_durable(votes[-1] if votes else None,
                                checkpoint[-1] if checkpoint else None, disk.get("block", []),
                                stable[-1] if stable else None)
        self.replicas[party] = replica
        self.recover(party)
        return replica

    # -- internals ----------------------------------------------------------------------------

    def _persist_vote(self, party: str, eff: Persist) -> None:
        """A `vote` row or a `votes` head (which drops the rows at or below its h); the
        party's disk["votes"] holds what a restart reads: the latest head joined with the
        rows above its h (node.storage's load)."""
        rows = self.vote_rows[party]
        if eff.key == "vote":
            rows[eff.seq] = eff.data
        else:
            self.vote_heads[party] = eff.data
            for seq in [s for s in rows if s <= eff.seq]:
                del rows[seq]
        head = self.vote_heads[party]
        if head:
            self.disk[party]["votes"] = [join_votes(head, rows.items())]

    def _receive(self, pkt: Packet) -> None:
        self._event(pkt.dst, Receive(pkt.data))

    def _event(self, party: str, event: Receive | Timeout) -> None:
        if party in self.replicas:
            self._apply(party, sends(self.replicas[party].step(event, self.now_ns)))
        else:
            self._apply(party, self.client_cores[party].step(event))

    def _apply(self, party: str, effects: Sequence[Effect | ClientEffect]) -> None:
        """Carry out a party's effects; a replica's come through `sends`, so a multicast is
        its copies."""
        if party in self.crashed:
            return
        for eff in effects:
            if type(eff) is Send:
                pkt = Packet(party, eff.to, eff.data, eff.kind)
                pkts = self.intercept(pkt) if self.intercept else [pkt]
                for p in pkts:
                    self.sent.append(p)
                    self.queue.append(p)
            elif type(eff) is SetTimer:
                self.timers[party][eff.key] = self.now_ns + eff.delay_ns
            elif type(eff) is CancelTimer:
                self.timers[party].pop(eff.key, None)
            elif type(eff) is Trace:
                self.traces.append((party, eff))
            elif type(eff) is Persist:
                if eff.key in ("vote", "votes"):  # kept as node.storage keeps them
                    self._persist_vote(party, eff)
                    continue
                records = self.disk[party].setdefault(eff.key, [])
                if eff.key == "block":
                    records.append(eff.data)
                    self.block_digests[party].append(eff.digest)
                else:
                    records[:] = [eff.data]
            elif type(eff) is Accepted:
                self.accepted.append((party, eff))

    # -- observations -------------------------------------------------------------------------

    def executed(self, rid: str) -> list[tuple[int, str]]:
        return [(t.fields["seq"], t.fields["digest"]) for p, t in self.traces
                if p == rid and t.event == "execute"]

    def sent_kinds(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.sent:
            out[p.kind] = out.get(p.kind, 0) + 1
        return out
