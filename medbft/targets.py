"""Fault targets: which replicas `primary`, `role: R`, `random: k` or a node id mean, in both
modes.

Why this exists: a scenario's crash, recover, isolate and Byzantine entries name their target
once, and a simulated run (`sim.faults`) and a real one (`medbft.real.cluster`) must pick the
same replicas for it. The rules:
- a node id is that node;
- `primary` is the primary of the view that most live replicas with an active view are in
  (ties: the higher view): the replica the others are following right now (OSDI '99 §4:
  the primary of view v is replica v mod n);
- `role:R` is every replica whose organisation has role R, in node order;
- `random:k` is k replicas drawn from all n by the run's fault stream
  (`random.Random(f"medbft:{seed}:faults")`), sorted by name, so one seed picks the same
  replicas in both modes and another seed may pick others.
What it must not know: how a mode learns views (it is handed them) or what the fault does.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["fault_rng", "primary_of", "resolve_target"]


def fault_rng(seed: int) -> random.Random:
    """The run's fault stream: draws `random:k` targets (and nothing else in a real run)."""
    return random.Random(f"medbft:{seed}:faults")


def primary_of(node_ids: Sequence[str], views: Iterable[tuple[int, bool]]) -> str:
    """The primary of the view most live replicas with an active view are in (ties: the higher
    view); `views` holds (view, active) for each live replica. View 0 when none is active."""
    counts: dict[int, int] = {}
    for view, active in views:
        if active:
            counts[view] = counts.get(view, 0) + 1
    view = max(counts, key=lambda v: (counts[v], v)) if counts else 0
    return node_ids[view % len(node_ids)]


def resolve_target(target: str, node_ids: Sequence[str], roles: Mapping[str, str | None],
                   primary: str | None, rng: random.Random) -> list[str]:
    """The replicas `target` names (see the module docstring). `primary` is `primary_of(...)`
    at this moment (needed only for `primary`). Raises ValueError for a `random:k` with k
    larger than n or a target that names no replica."""
    ids = list(node_ids)
    if target == "primary":
        if primary is None:
            raise ValueError("target `primary` needs the current primary")
        return [primary]
    if target.startswith("role:"):
        return [nid for nid in ids if roles.get(nid) == target[5:]]
    if target.startswith("random:"):
        k = int(target[7:])
        if not 0 <= k <= len(ids):
            raise ValueError(f"target {target!r}: k must be between 0 and n = {len(ids)}")
        return sorted(rng.sample(ids, k))
    if target not in ids:
        raise ValueError(f"target {target!r} names no replica; replicas: {', '.join(ids)}")
    return [target]
