"""The replicated state machine interface, and a minimal key-value machine behind it.

Why this exists: the replica orders and executes batches but must not know what they mean.
Anything deterministic that can execute a batch, report a digest of its state and snapshot /
restore itself can sit behind it. The healthcare ledger implements the same interface;
`KeyValueStore` gives protocol measurements something tiny to execute.

Cost rules, so that a run's cost stays linear in its length: `digest` is O(1) (maintained per
write, e.g. a multiset hash, never a pass over the state), and a checkpoint costs O(1) when
taken: `checkpoint(seq)` only remembers where the state was (`Versions`: the old value of each
key on its first write after the mark, an undo log), and `snapshot_at(seq)` serialises that
state only when someone asks for it (a FETCH-STATE, a durable stable checkpoint).

Admission: `admissible(op)` is asked before a request is ordered; what it refuses never
enters a batch, so never a block or a disk (the ledger refuses personal data and free text
this way; the key-value machine admits everything).

Determinism rules for implementations: read only the state, the request and the `BlockInfo`
agreed in consensus (never the wall clock or an unseeded random source); iterate in sorted
order. `snapshot`/`snapshot_at` are canonical: equal states give equal bytes on every replica
(state transfer checks chunks of them against hashes other replicas vouch for).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol

from node.messages import Request

__all__ = ["Accept", "BlockInfo", "KeyValueStore", "StateMachine", "Versions"]

Accept = Callable[[bytes], bool]
"""Given the digest a snapshot's state would have, may it replace the current state?"""


@dataclass(frozen=True, slots=True)
class BlockInfo:
    """What consensus agreed about a batch besides its requests."""

    seq: int
    view: int
    timestamp_ns: int


class StateMachine(Protocol):
    def admissible(self, op: bytes) -> str | None:
        """None if `op` may be ordered, else the name of the rule that refuses it. A pure,
        deterministic function of the bytes (and constant configuration such as a genesis),
        never of the state: replicas run it when a request arrives and on every request of a
        PRE-PREPARE, so a refused request is never ordered, executed or stored
        (docs/security.md)."""
        ...

    def execute(self, requests: list[Request], block: BlockInfo) -> list[bytes]:
        """Execute `requests` in order; return one result per request."""
        ...

    def digest(self) -> bytes:
        """A digest of the whole state (equal states give equal digests, whatever the
        history), in O(1)."""
        ...

    def snapshot(self) -> bytes:
        """Serialise the current state (canonical bytes)."""
        ...

    def checkpoint(self, seq: int) -> None:
        """Remember the current state as checkpoint `seq` (cheap: no serialisation)."""
        ...

    def snapshot_at(self, seq: int) -> bytes:
        """`snapshot()` of the state as it was at remembered checkpoint `seq` (KeyError if
        it is not remembered)."""
        ...

    def release(self, seq: int) -> None:
        """Forget the remembered checkpoints below `seq`."""
        ...

    def restore(self, snapshot: bytes, accept: Accept | None = None) -> None:
        """Replace the state with a snapshot, forgetting every remembered checkpoint; raise
        ValueError, leaving the state unchanged, if it is malformed or `accept` refuses the
        digest of the state it holds."""
        ...


class Versions:
    """An undo log per remembered checkpoint: for each key first written after checkpoint
    `seq` (and before the next one), its value at `seq` (None: absent). Recording costs O(1)
    per write; the state at a checkpoint is the current one overlaid with the logs of that
    checkpoint and every later one, oldest winning."""

    __slots__ = ("latest", "marks")

    def __init__(self) -> None:
        self.marks: dict[int, dict[Hashable, Any]] = {}
        self.latest: dict[Hashable, Any] | None = None

    def mark(self, seq: int) -> None:
        """Checkpoint `seq` (above every remembered one) starts here."""
        self.latest = self.marks[seq] = {}

    def note(self, key: Hashable, old: Any) -> None:
        """`key` is about to change; `old` is its value now (None: absent)."""
        latest = self.latest
        if latest is not None and key not in latest:
            latest[key] = old

    def overlay(self, seq: int) -> dict[Hashable, Any]:
        """{key: value at checkpoint `seq`} for every key written since (None: absent)."""
        if seq not in self.marks:
            raise KeyError(f"checkpoint {seq} is not remembered")
        out: dict[Hashable, Any] = {}
        for s in sorted(self.marks, reverse=True):
            if s < seq:
                break
            out.update(self.marks[s])
        return out

    def release(self, seq: int) -> None:
        for s in [s for s in self.marks if s < seq]:
            del self.marks[s]
        if not self.marks:
            self.latest = None


_MASK = (1 << 512) - 1


def _item_hash(key: str, value: str) -> int:
    data = json.dumps([key, value], separators=(",", ":")).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=64).digest(), "big")


class KeyValueStore:
    """Ops are `put <key> <value>`, `get <key>`, or anything else (a no-op that echoes).

    Results are short byte strings, so replies stay small as in the paper's 0/0 benchmark.
    The digest sums H(key, value) mod 2^512 over the items (AdHash), updated per put.
    """

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.executed = 0
        self.acc = 0
        self.versions = Versions()
        self.executed_at: dict[int, int] = {}

    def admissible(self, op: bytes) -> str | None:
        """Every op is admissible here (an unknown op is a no-op)."""
        return None

    def execute(self, requests: list[Request], block: BlockInfo) -> list[bytes]:
        results = []
        for req in requests:
            results.append(self._apply(req.op))
            self.executed += 1
        return results

    def put(self, key: str, value: str) -> None:
        """Set one item, keeping the digest and the undo log current."""
        old = self.data.get(key)
        self.versions.note(key, old)
        if old is not None:
            self.acc -= _item_hash(key, old)
        self.data[key] = value
        self.acc = (self.acc + _item_hash(key, value)) & _MASK

    def _apply(self, op: bytes) -> bytes:
        parts = op.split(b" ", 2)
        if parts[0] == b"put" and len(parts) == 3:
            self.put(parts[1].decode(errors="replace"), parts[2].decode(errors="replace"))
            return b"ok"
        if parts[0] == b"get" and len(parts) == 2:
            return self.data.get(parts[1].decode(errors="replace"), "").encode()
        return b"ok"

    @staticmethod
    def _encode(data: dict[str, str], executed: int) -> bytes:
        return json.dumps(
            {"data": data, "executed": executed}, sort_keys=True, separators=(",", ":")
        ).encode()

    def snapshot(self) -> bytes:
        return self._encode(self.data, self.executed)

    def checkpoint(self, seq: int) -> None:
        self.versions.mark(seq)
        self.executed_at[seq] = self.executed

    def snapshot_at(self, seq: int) -> bytes:
        overlay = self.versions.overlay(seq)
        data = dict(self.data)
        for key, old in overlay.items():
            if old is None:
                data.pop(str(key), None)
            else:
                data[str(key)] = old
        return self._encode(data, self.executed_at[seq])

    def release(self, seq: int) -> None:
        self.versions.release(seq)
        for s in [s for s in self.executed_at if s < seq]:
            del self.executed_at[s]

    @staticmethod
    def _digest(acc: int, executed: int) -> bytes:
        return hashlib.sha256(b"medbft-kv/1" + acc.to_bytes(64, "big")
                              + executed.to_bytes(8, "big")).digest()

    def digest(self) -> bytes:
        return self._digest(self.acc, self.executed)

    def restore(self, snapshot: bytes, accept: Accept | None = None) -> None:
        try:
            obj = json.loads(snapshot)
            data = {str(k): str(v) for k, v in dict(obj["data"]).items()}
            executed = int(obj["executed"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"malformed key-value snapshot: {exc}") from exc
        acc = 0
        for key, value in data.items():
            acc += _item_hash(key, value)
        acc &= _MASK
        if accept is not None and not accept(self._digest(acc, executed)):
            raise ValueError("key-value snapshot does not match the expected digest")
        self.data, self.executed, self.acc = data, executed, acc
        self.versions = Versions()
        self.executed_at = {}
