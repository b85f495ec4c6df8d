"""The replicated state machine interface, and a minimal key-value machine behind it.

Why this exists: the replica orders and executes batches but must not know what they mean.
Anything deterministic that can execute a batch, report a digest of its state and snapshot /
restore itself can sit behind it. The healthcare ledger will implement the same interface;
until then `KeyValueStore` gives runs something real to execute.

Determinism rules for implementations: read only the state, the request and the `BlockInfo`
agreed in consensus (never the wall clock or an unseeded random source); iterate in sorted
order.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Protocol

from node.messages import Request

__all__ = ["BlockInfo", "KeyValueStore", "StateMachine"]


@dataclass(frozen=True, slots=True)
class BlockInfo:
    """What consensus agreed about a batch besides its requests."""

    seq: int
    view: int
    timestamp_ns: int


class StateMachine(Protocol):
    def execute(self, requests: list[Request], block: BlockInfo) -> list[bytes]:
        """Execute `requests` in order; return one result per request."""
        ...

    def digest(self) -> bytes:
        """A digest of the whole state (equal states give equal digests)."""
        ...

    def snapshot(self) -> bytes:
        """Serialise the state for checkpoints and state transfer."""
        ...

    def restore(self, snapshot: bytes) -> None:
        """Replace the state with a snapshot; raise ValueError if it is malformed."""
        ...


class KeyValueStore:
    """Ops are `put <key> <value>`, `get <key>`, or anything else (a no-op that echoes).

    Results are short byte strings, so replies stay small as in the paper's 0/0 benchmark.
    """

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.executed = 0

    def execute(self, requests: list[Request], block: BlockInfo) -> list[bytes]:
        results = []
        for req in requests:
            results.append(self._apply(req.op))
            self.executed += 1
        return results

    def _apply(self, op: bytes) -> bytes:
        parts = op.split(b" ", 2)
        if parts[0] == b"put" and len(parts) == 3:
            self.data[parts[1].decode(errors="replace")] = parts[2].decode(errors="replace")
            return b"ok"
        if parts[0] == b"get" and len(parts) == 2:
            return self.data.get(parts[1].decode(errors="replace"), "").encode()
        return b"ok"

    def snapshot(self) -> bytes:
        return json.dumps(
            {"data": self.data, "executed": self.executed}, sort_keys=True, separators=(",", ":")
        ).encode()

    def digest(self) -> bytes:
        return hashlib.sha256(self.snapshot()).digest()

    def restore(self, snapshot: bytes) -> None:
        try:
            obj = json.loads(snapshot)
            data = {str(k): str(v) for k, v in dict(obj["data"]).items()}
            executed = int(obj["executed"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"malformed key-value snapshot: {exc}") from exc
        self.data = data
        self.executed = executed
