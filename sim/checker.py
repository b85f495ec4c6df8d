"""The checker: verdicts on safety and liveness, from outside the replicas.

Why this exists: a simulator that injects faults is only useful if it notices when the
protocol breaks. The checker sees every replica's executions (from the trace) and every
client's submissions, and judges them against PBFT's guarantees:
- agreement: no two honest replicas execute different batches at one sequence number, and
  no two honest replicas report different state digests at one checkpoint;
- validity: only requests some client submitted are executed;
- exactly-once: no honest replica executes one request twice;
- liveness: every submitted request was settled by its client by the end of the run.
It never reads replica internals, only what they announced.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Checker", "Verdicts"]


@dataclass
class Verdicts:
    safety_ok: bool
    violations: list[dict[str, Any]]
    liveness_ok: bool
    liveness: dict[str, Any]


@dataclass
class Checker:
    honest: set[str]
    executions: dict[str, dict[int, str]] = field(default_factory=dict)
    checkpoints: dict[str, dict[int, str]] = field(default_factory=dict)
    executed_keys: dict[str, dict[str, int]] = field(default_factory=dict)
    submitted: set[str] = field(default_factory=set)
    violations: list[dict[str, Any]] = field(default_factory=list)

    def on_execute(self, node: str, seq: int, digest: str, executed: Iterable[str]) -> None:
        seen = self.executions.setdefault(node, {})
        prior = seen.get(seq)
        if prior is not None and prior != digest and node in self.honest:
            self.violations.append({"kind": "re-execution with another digest", "node": node,
                                    "seq": seq})
        if prior is None:  # the first digest stays: a later repair must not hide a fork
            seen[seq] = digest
        keys = self.executed_keys.setdefault(node, {})
        for key in executed:
            if key in keys and node in self.honest:
                self.violations.append({"kind": "executed twice", "node": node,
                                        "request": key, "seqs": [keys[key], seq]})
            keys[key] = seq
            if key not in self.submitted:
                self.violations.append({"kind": "executed a request no client submitted",
                                        "node": node, "request": key, "seq": seq})

    def checked_seqs(self) -> int:
        """How many sequence numbers some honest replica executed (what agreement covered)."""
        return len({seq for node, seqs in self.executions.items() if node in self.honest
                    for seq in seqs})

    def on_checkpoint(self, node: str, seq: int, digest: str) -> None:
        self.checkpoints.setdefault(node, {})[seq] = digest

    def verdicts(self, settled: int, submitted: int, extra: dict[str, Any]) -> Verdicts:
        # Forks first: beyond f, a replica that found its checkpoint outvoted repairs its state
        # and re-executes (node/pbft/transfer.py), which adds consequences after the cause.
        violations = self._forks(self.executions, "batch") + \
            self._forks(self.checkpoints, "state digest") + list(self.violations)
        liveness_ok = settled == submitted
        liveness = {"ok": liveness_ok, "submitted": submitted, "settled": settled,
                    "unsettled": submitted - settled, **extra}
        return Verdicts(not violations, violations, liveness_ok, liveness)

    def _forks(self, by_node: dict[str, dict[int, str]], what: str) -> list[dict[str, Any]]:
        seqs: dict[int, dict[str, str]] = {}
        for node in sorted(by_node):
            if node not in self.honest:
                continue
            for seq, digest in by_node[node].items():
                seqs.setdefault(seq, {})[node] = digest
        out = []
        for seq in sorted(seqs):
            if len(set(seqs[seq].values())) > 1:
                out.append({"kind": f"agreement: different {what} at one seq", "seq": seq,
                            "digests": dict(sorted(seqs[seq].items()))})
        return out
