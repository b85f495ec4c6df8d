"""Swarm testing: random fault schedules, one per seed, each checked for safety and liveness.

Why this exists: hand-written scenarios test the faults we thought of. Deterministic
simulation testing (FoundationDB, TigerBeetle's VOPR) instead lets a seed draw everything:
which fault kinds are switched on at all and how often (swarm testing: Groce et al., ISSTA
'12), the schedule itself, the network and the load. Each run has a faulty phase and then a
healed phase (partitions and link faults end, crashed replicas restart; a Byzantine replica
may stay Byzantine), after which every request must settle. Safety must hold on every seed.

Harm (medbft/harm.py) is judged on every seed too: with at most f faulty replicas a run must
count no domain harm (a dose after its recall committed, a false reply accepted, ...). With
`app="ledger"` every seed runs the healthcare ledger with one client of each role and a
drawn flow, and half of the seeds with a Byzantine replica give it a ledger-aware behaviour
(censor-kind, front-run-revoke, delay-regulator, false-reply) instead; these are drawn from
their own stream, so the default swarm's schedules are unchanged.

A failing seed is reported with the command that reproduces it, and its schedule is written as
a scenario file, then shrunk (faults removed, load reduced) to a smaller scenario that still
fails the same way.

What it must not know: protocol internals. It only writes scenarios and reads summaries.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from medbft.scenario import BEHAVIORS, LEDGER_BEHAVIORS, parse_scenario
from sim.run import run_scenario

__all__ = ["FuzzOutcome", "draw_scenario", "fuzz_one", "run_fuzz", "shrink"]

FAULTY_PHASE_MS = 2000
#: The protocol-level behaviours every swarm draws from (ledger-aware ones: `app="ledger"`).
BYZANTINE = tuple(b for b in BEHAVIORS if b not in LEDGER_BEHAVIORS)
APPS = ("ledger", "kv")
LEDGER_FLOWS = ("mixed", "vaccine-recall", "consent-race")


@dataclass
class FuzzOutcome:
    seed: int
    safety_ok: bool
    liveness_ok: bool
    violations: list[dict[str, Any]] = field(default_factory=list)
    unsettled: int = 0
    scenario: dict[str, Any] = field(default_factory=dict)
    # what the run went through: read by `Coverage` to show what a swarm exercised
    view_changes: int = 0
    state_transfers: int = 0
    committed: int = 0
    rejected: int = 0
    harm: int = 0
    """Domain harm events (summary harm.events)."""
    harm_kinds: dict[str, int] = field(default_factory=dict)
    within_f: bool = True
    """At most f faulty replicas: harm must then be 0."""
    unfair: int = 0
    """Unfair orderings (harm.unfair.events): PBFT does not prevent them; not a failure."""

    @property
    def harm_ok(self) -> bool:
        return self.harm == 0 or not self.within_f

    @property
    def ok(self) -> bool:
        return self.safety_ok and self.liveness_ok and self.harm_ok

    @property
    def failure(self) -> str:
        if self.ok:
            return ""
        return ("safety" if not self.safety_ok else "liveness" if not self.liveness_ok
                else "harm")


def _ms(value: int) -> str:
    return f"{value}ms"


def draw_scenario(seed: int, n: int = 4, faulty: int | None = None,
                  byzantine: bool = True, app: str | None = None) -> dict[str, Any]:
    """The scenario (as a raw mapping) that `seed` draws for an n-replica network with at most
    `faulty` faulty replicas (default f). `app`: force the application (None: drawn, the
    ledger on about 30% of seeds)."""
    rng = random.Random(f"medbft-fuzz:{n}:{faulty}:{byzantine}:{seed}")
    f = (n - 1) // 3
    budget = f if faulty is None else faulty
    ids = [f"r{i + 1}" for i in range(n)]
    # Swarm: each fault kind is on or off for this seed, with its own intensity.
    p = {kind: (rng.random() if rng.random() < 0.5 else 0.0)
         for kind in ("crash", "partition", "link", "byzantine")}
    if not byzantine:
        p["byzantine"] = 0.0
    faulty_nodes = rng.sample(ids, budget) if budget else []
    behavior = rng.choice(BYZANTINE)  # one per seed: Byzantine replicas collude
    faults: list[dict[str, Any]] = []
    for node in faulty_nodes:
        if rng.random() < p["byzantine"]:
            faults.append(_byzantine_fault(rng, node, behavior))
        elif rng.random() < p["crash"] or p["crash"] > 0.5:
            faults += _crash_faults(rng, node)
    for _ in range(rng.randint(0, 3) if p["partition"] else 0):
        faults.append(_partition_fault(rng, ids))
    for _ in range(rng.randint(0, 3) if p["link"] else 0):
        faults.append(_link_fault(rng, ids))
    if any("partition" in fl or "link" in fl or "isolate" in fl for fl in faults):
        faults.append({"at": _ms(FAULTY_PHASE_MS), "heal": "all"})
    latency_high = rng.choice([5, 10, 30])
    raw: dict[str, Any] = {
        "name": f"fuzz-n{n}-seed{seed}",
        "description": f"Drawn by medbft fuzz (n={n}, faulty={budget}, seed={seed}).",
        "seed": seed,
        "duration": _ms(FAULTY_PHASE_MS + 500),
        "drain": "20s",
        "nodes": [{"id": i, "role": ("hospital", "pharmacy", "regulator")[k % 3]}
                  for k, i in enumerate(ids)],
        "network": {"latency": {"dist": "uniform", "low": "2ms", "high": _ms(latency_high)},
                    "loss": rng.choice([0.0, 0.0, 0.0, 0.01, 0.03])},
        "protocol": {"batch_size": rng.choice([1, 1, 4]), "batch_timeout": "1ms",
                     "checkpoint_interval": rng.choice([4, 8, 16]),
                     "watermark_window": 32, "view_change_timeout": "300ms",
                     "client_timeout": "600ms"},
        "cpu": rng.choice(["none", "none", "default"]),
        # The ledger on some seeds (its determinism is under test too), the tiny key-value
        # store on the rest (faster, so more schedules per hour).
        "workload": {"clients": rng.randint(1, 2), "outstanding": rng.randint(1, 2),
                     "app": "ledger" if rng.random() < 0.3 else "kv"},
        "faults": sorted(faults, key=lambda fl: int(fl["at"][:-2])),
        "expect": {"safety": True, "liveness": True},
    }
    if app is not None:
        raw = _force_app(raw, app, seed, n, budget)
    return raw


def _force_app(raw: dict[str, Any], app: str, seed: int, n: int, budget: int,
               ) -> dict[str, Any]:
    """`raw` with its application forced; for the ledger, a client of each role, a drawn flow
    and (on half the Byzantine seeds) ledger-aware behaviours, from a stream of their own."""
    if app == "kv":
        return {**raw, "workload": {**raw["workload"], "app": "kv"}}
    rng = random.Random(f"medbft-fuzz-ledger:{n}:{budget}:{seed}")
    flow = rng.choice(LEDGER_FLOWS)
    workload: dict[str, Any] = {"clients": 7, "outstanding": raw["workload"]["outstanding"],
                                "app": "ledger", "flow": flow}
    if flow == "vaccine-recall":
        workload["recall_news"] = "committed"
    faults = raw["faults"]
    if any("byzantine" in fl for fl in faults) and rng.random() < 0.5:
        behavior = _ledger_behavior(rng, rng.choice(LEDGER_BEHAVIORS))
        faults = [{**fl, "behavior": behavior} if "byzantine" in fl else fl for fl in faults]
    return {**raw, "workload": workload, "faults": faults}


def _ledger_behavior(rng: random.Random, name: str) -> Any:
    if name == "censor-kind":
        kinds = rng.choice([["RECALL_ISSUE"], ["CONSENT_REVOKE"], ["RECALL_ISSUE",
                                                                   "CONSENT_REVOKE"]])
        return {name: {"kinds": kinds}}
    if name == "front-run-revoke":
        return {name: {"hold": _ms(rng.choice([50, 200]))}}
    return name  # delay-regulator (just under the view-change timeout), false-reply


def _window(rng: random.Random) -> tuple[int, int]:
    start = rng.randint(100, FAULTY_PHASE_MS - 200)
    return start, min(FAULTY_PHASE_MS, start + rng.randint(100, 1500))


def _crash_faults(rng: random.Random, node: str) -> list[dict[str, Any]]:
    start, end = _window(rng)
    return [{"at": _ms(start), "crash": node, "until": _ms(end)}]


def _byzantine_fault(rng: random.Random, node: str, name: str) -> dict[str, Any]:
    behavior: Any = name
    if name == "slow-primary":
        behavior = {name: {"delay": _ms(rng.choice([100, 250]))}}
    elif name == "censor":
        behavior = {name: {"clients": ["client-1"]}}
    elif name == "premature-view-change":
        behavior = {name: {"every": _ms(rng.choice([200, 700]))}}
    start, end = _window(rng)
    fault: dict[str, Any] = {"at": _ms(start), "byzantine": node, "behavior": behavior}
    if rng.random() < 0.5:
        fault["until"] = _ms(end)  # otherwise it stays Byzantine through the healed phase
    return fault


def _partition_fault(rng: random.Random, ids: list[str]) -> dict[str, Any]:
    start, end = _window(rng)
    if rng.random() < 0.3:
        return {"at": _ms(start), "isolate": rng.choice(ids), "until": _ms(end)}
    shuffled = rng.sample(ids, len(ids))
    cut = rng.randint(1, len(ids) - 1)
    return {"at": _ms(start), "partition": [shuffled[:cut], shuffled[cut:]], "until": _ms(end)}


def _link_fault(rng: random.Random, ids: list[str]) -> dict[str, Any]:
    start, end = _window(rng)
    a, b = rng.sample(ids, 2)
    change = {"between": [a, b], "loss": rng.choice([0.1, 0.3, 0.6]),
              "duplicate": rng.choice([0.0, 0.2]), "reorder": rng.choice([0.0, 0.3]),
              "latency": _ms(rng.choice([5, 50, 150]))}
    return {"at": _ms(start), "link": change, "until": _ms(end)}


def check(raw: dict[str, Any]) -> FuzzOutcome:
    """Run one drawn scenario and judge it (harm counts against it only within f faults)."""
    summary = run_scenario(parse_scenario(raw, raw["name"])).summary
    faulty = {str(fl[k]) for fl in raw["faults"] for k in ("crash", "byzantine", "tamper")
              if k in fl}
    harm = summary.get("harm", {})
    return FuzzOutcome(raw["seed"], summary["safety"]["ok"], summary["liveness"]["ok"],
                       summary["safety"]["violations"][:5], summary["liveness"]["unsettled"],
                       raw, summary["view_changes"], summary["state_transfers"],
                       summary["requests"]["committed"], summary["rejected_messages"]["total"],
                       harm.get("events", 0), harm.get("by_kind", {}),
                       len(faulty) <= summary["f"], harm.get("unfair", {}).get("events", 0))


def fault_labels(raw: dict[str, Any]) -> list[str]:
    """The kinds of fault a drawn scenario holds, Byzantine ones by behaviour
    (e.g. ["crash", "partition", "byzantine:equivocate"]), sorted, each once. Ends of faults
    (`heal`, `recover`) are not faults."""
    labels = set()
    for fault in raw.get("faults", []):
        if "byzantine" in fault:
            behavior = fault["behavior"]
            name = behavior if isinstance(behavior, str) else next(iter(behavior))
            labels.add(f"byzantine:{name}")
        else:
            labels.update(k for k in fault if k not in ("at", "until", "heal", "recover"))
    return sorted(labels)


@dataclass
class Coverage:
    """What a swarm exercised: a swarm that passes without view changes or state transfers
    proves little about them. Counts are of seeds."""

    seeds: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    with_view_change: int = 0
    with_state_transfer: int = 0
    with_rejected: int = 0
    most_view_changes: int = 0
    committed: int = 0
    ledger_seeds: int = 0
    harm_within_f: int = 0
    unfair: int = 0
    with_unfair: int = 0

    def add(self, outcome: FuzzOutcome) -> None:
        self.seeds += 1
        for label in fault_labels(outcome.scenario):
            self.faults[label] = self.faults.get(label, 0) + 1
        self.with_view_change += outcome.view_changes > 0
        self.with_state_transfer += outcome.state_transfers > 0
        self.with_rejected += outcome.rejected > 0
        self.most_view_changes = max(self.most_view_changes, outcome.view_changes)
        self.committed += outcome.committed
        self.ledger_seeds += outcome.scenario.get("workload", {}).get("app") == "ledger"
        self.harm_within_f += outcome.harm if outcome.within_f else 0
        self.unfair += outcome.unfair
        self.with_unfair += outcome.unfair > 0

    def lines(self) -> list[str]:
        def pct(k: int) -> str:
            return f"{k} ({100 * k / self.seeds:.0f}%)" if self.seeds else "0"

        out = [f"seeds with a view change: {pct(self.with_view_change)}, most in one run: "
               f"{self.most_view_changes}",
               f"seeds with a state transfer: {pct(self.with_state_transfer)}",
               f"seeds with rejected (forged or invalid) messages: {pct(self.with_rejected)}",
               f"requests committed in all: {self.committed}",
               f"ledger seeds: {pct(self.ledger_seeds)}; harm events within f faults: "
               f"{self.harm_within_f}; unfair orderings (not prevented by PBFT): "
               f"{self.unfair} in {self.with_unfair} seeds"]
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items()))
        out.append(f"seeds per fault kind: {kinds}")
        return out


def fuzz_one(seed: int, n: int = 4, faulty: int | None = None,
             byzantine: bool = True, app: str | None = None) -> FuzzOutcome:
    return check(draw_scenario(seed, n, faulty, byzantine, app))


def _fuzz_args(args: tuple[int, int, int | None, bool, str | None]) -> FuzzOutcome:
    return fuzz_one(*args)


def run_fuzz(seeds: range, n: int, faulty: int | None, byzantine: bool, jobs: int,
             app: str | None = None) -> Iterator[FuzzOutcome]:
    """Outcomes of every seed (in completion order when jobs > 1)."""
    tasks = [(seed, n, faulty, byzantine, app) for seed in seeds]
    if jobs <= 1:
        yield from map(_fuzz_args, tasks)
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        yield from pool.map(_fuzz_args, tasks, chunksize=4)


def shrink(raw: dict[str, Any], failure: str, budget: int = 40,
           judge: Callable[[dict[str, Any]], FuzzOutcome] = check) -> dict[str, Any]:
    """A smaller scenario that still fails the same way: drop faults one at a time, then
    reduce clients and outstanding requests, keeping each change that preserves the failure."""
    best = dict(raw)
    tries = 0

    def still_fails(candidate: dict[str, Any]) -> bool:
        nonlocal tries
        tries += 1
        return judge(candidate).failure == failure

    i = 0
    while i < len(best["faults"]) and tries < budget:
        candidate = {**best, "faults": best["faults"][:i] + best["faults"][i + 1:]}
        if still_fails(candidate):
            best = candidate
        else:
            i += 1
    for key in ("clients", "outstanding"):
        while best["workload"][key] > 1 and tries < budget:
            candidate = {**best, "workload": {**best["workload"], key: best["workload"][key] - 1}}
            if not still_fails(candidate):
                break
            best = candidate
    best["name"] = f"{raw['name']}-shrunk"
    best["description"] = (f"{raw.get('description', '')} Shrunk from {len(raw['faults'])} to "
                           f"{len(best['faults'])} faults; still fails {failure}.")
    return best
