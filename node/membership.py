"""The genesis membership: who the replicas and clients are, their roles and public keys.

Why this exists: every party must agree on the replica order (the primary of view v is
replica v mod n) and on whose key authenticates whom. It is plain data, read from a file in
real mode and generated from the seed in simulation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from node.quorum import faults_tolerated, quorum

__all__ = ["Member", "Membership"]


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    role: str
    public_key: bytes
    address: str = ""


@dataclass(frozen=True)
class Membership:
    """Replicas in primary order, and the clients allowed to submit requests."""

    nodes: tuple[Member, ...]
    clients: tuple[Member, ...] = ()
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = [m.id for m in self.nodes] + [m.id for m in self.clients]
        if len(set(ids)) != len(ids):
            raise ValueError("membership ids must be unique")
        # index_of runs for every message received: a dict, not a scan of n members.
        object.__setattr__(self, "_index", {m.id: i for i, m in enumerate(self.nodes)})

    @property
    def n(self) -> int:
        return len(self.nodes)

    @property
    def f(self) -> int:
        return faults_tolerated(self.n)

    @property
    def q(self) -> int:
        return quorum(self.n)

    @property
    def node_ids(self) -> tuple[str, ...]:
        return tuple(m.id for m in self.nodes)

    def index_of(self, node_id: str) -> int | None:
        return self._index.get(node_id)

    def public_keys(self) -> dict[str, bytes]:
        return {m.id: m.public_key for m in self.nodes + self.clients}

    def role_of(self, party: str) -> str | None:
        for m in self.nodes + self.clients:
            if m.id == party:
                return m.role
        return None

    def to_json(self) -> str:
        def row(m: Member) -> dict[str, str]:
            return {"id": m.id, "role": m.role, "public_key": m.public_key.hex(),
                    "address": m.address}

        return json.dumps(
            {"nodes": [row(m) for m in self.nodes], "clients": [row(m) for m in self.clients]},
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> Membership:
        data = json.loads(text)

        def member(d: dict[str, str]) -> Member:
            return Member(d["id"], d["role"], bytes.fromhex(d["public_key"]),
                          d.get("address", ""))

        return cls(tuple(member(d) for d in data["nodes"]),
                   tuple(member(d) for d in data.get("clients", [])))
