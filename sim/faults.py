"""Timed faults: turn a scenario's `faults:` entries into actions on a running simulation.

Why this exists: one place decides what each fault kind does to the parts of a run (runtimes,
network, checker) and when it ends, resolves targets (a node id, `primary` = whoever is
primary at that moment, `{role: ...}`, `{random: k}` drawn from the seed), and records fault
windows for the summary and the plots.

What it must not know: protocol internals beyond reading a replica's view to find the
primary. Byzantine nodes leave the checker's honest set for the whole run.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from medbft.scenario import (
    ByzantineFault,
    CrashFault,
    FaultSpec,
    HealFault,
    IsolateFault,
    LinkFault,
    PartitionFault,
    RecoverFault,
    RequestFault,
    Scenario,
    SlowFault,
    TamperFault,
)
from medbft.targets import primary_of, resolve_target
from node.pbft import Replica
from node.runtime import NodeRuntime
from sim.byzantine import ByzantineShell, Coalition
from sim.checker import Checker
from sim.loop import VirtualTimeLoop
from sim.network import Network

__all__ = ["FaultInjector", "FaultWindow"]


@dataclass
class FaultWindow:
    kind: str
    target: str
    start_ns: int
    end_ns: int | None = None
    label: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target, "start_s": self.start_ns / 1e9,
                "end_s": None if self.end_ns is None else self.end_ns / 1e9,
                "label": self.label}


@dataclass
class FaultInjector:
    scenario: Scenario
    loop: VirtualTimeLoop
    runtimes: dict[str, NodeRuntime]
    replicas: dict[str, Replica]
    network: Network
    checker: Checker
    rng: random.Random
    """The run's fault stream (`medbft.targets.fault_rng(seed)`): `random:k` targets."""
    record: Callable[[dict[str, Any]], None]
    seed: int
    """The run's seed: each Byzantine replica's own stream is derived from it."""
    tamper: Callable[[str, str], str] | None = None
    """The application's tampering (medbft.apps: alter a replica's stored ledger)."""
    windows: list[FaultWindow] = field(default_factory=list)
    coalitions: dict[str, Coalition] = field(default_factory=dict)
    shells: dict[str, ByzantineShell] = field(default_factory=dict)
    byzantine_ever: set[str] = field(default_factory=set)
    submit: Callable[[str], None] | None = None
    """Sends one request more from a client (`request` faults): the workload's, set by run."""
    _open: dict[tuple[str, str], FaultWindow] = field(default_factory=dict)
    _next_key: int = 0

    def schedule(self) -> None:
        for fault in self.scenario.faults:
            self.loop.call_at_ns(fault.at_ns, self._begin, fault)

    # -- targets ------------------------------------------------------------------------------

    def current_primary(self) -> str:
        """The primary of the view most live, active replicas are in (medbft.targets)."""
        return primary_of(self.scenario.node_ids, (
            (r.view, r.view_active) for nid, r in self.replicas.items()
            if not self.runtimes[nid].crashed))

    def resolve(self, target: str) -> list[str]:
        """The replicas `target` names now, by the one rule both modes share."""
        primary = self.current_primary() if target == "primary" else None
        roles = {nd.id: nd.role for nd in self.scenario.nodes}
        return resolve_target(target, self.scenario.node_ids, roles, primary, self.rng)

    # -- beginning and ending -----------------------------------------------------------------

    def _begin(self, fault: FaultSpec) -> None:
        until = getattr(fault, "until_ns", None)
        key = self._next_key
        self._next_key += 1
        ended: Callable[[], None] | None = None
        if isinstance(fault, CrashFault):
            nodes = self.resolve(fault.node)
            for node in nodes:
                self._crash(node)
            ended = lambda: self._recover_all(nodes)  # noqa: E731
        elif isinstance(fault, RecoverFault):
            for node in self.resolve(fault.node):
                self._recover(node)
        elif isinstance(fault, PartitionFault):
            self.network.partition(key, fault.groups)
            self._window("partition", " | ".join(",".join(g) for g in fault.groups), key,
                         "partition")
            ended = lambda: self._end_network(key)  # noqa: E731
        elif isinstance(fault, IsolateFault):
            nodes = self.resolve(fault.node)
            self.network.isolate(key, nodes)
            self._window("isolate", ",".join(nodes), key, f"isolate {','.join(nodes)}")
            ended = lambda: self._end_network(key)  # noqa: E731
        elif isinstance(fault, LinkFault):
            ended = self._degrade(key, fault)
        elif isinstance(fault, HealFault):
            self.network.heal_all()
            for (kind, _), window in list(self._open.items()):
                if kind in ("partition", "isolate", "link"):
                    self._close(window)
            self.record({"t": self.loop.now_ns, "event": "heal", "node": "*"})
        elif isinstance(fault, SlowFault):
            ended = self._slow(fault)
        elif isinstance(fault, ByzantineFault):
            ended = self._byzantine(fault)
        elif isinstance(fault, RequestFault):
            if self.submit is not None:
                self.submit(fault.client)
        elif isinstance(fault, TamperFault):
            self._tamper(fault)
        else:  # pragma: no cover - the schema admits only the kinds handled above
            raise AssertionError(f"unhandled fault {fault!r}")
        if until is not None and ended is not None:
            self.loop.call_at_ns(until, ended)

    def _window(self, kind: str, target: str, key: int | str, label: str) -> FaultWindow:
        window = FaultWindow(kind, target, self.loop.now_ns, None, label)
        self.windows.append(window)
        self._open[(kind, str(key))] = window
        self.record({"t": self.loop.now_ns, "event": f"{kind}-begin", "node": target,
                     "label": label})
        return window

    def _close(self, window: FaultWindow) -> None:
        if window.end_ns is None:
            window.end_ns = self.loop.now_ns
            self.record({"t": self.loop.now_ns, "event": f"{window.kind}-end",
                         "node": window.target, "label": window.label})
        for k, w in list(self._open.items()):
            if w is window:
                del self._open[k]

    def _end_network(self, key: int) -> None:
        self.network.end_fault(key)
        for kind in ("partition", "isolate", "link"):
            window = self._open.get((kind, str(key)))
            if window is not None:
                self._close(window)

    def _crash(self, node: str) -> None:
        rt = self.runtimes[node]
        if rt.crashed:
            return
        rt.crash()
        self.record({"t": self.loop.now_ns, "node": node, "event": "crash"})
        self._window("crash", node, node, f"{node} crashed")

    def _recover_all(self, nodes: list[str]) -> None:
        for node in nodes:
            self._recover(node)

    def _recover(self, node: str) -> None:
        rt = self.runtimes[node]
        if not rt.crashed:
            return
        window = self._open.get(("crash", node))
        if window is not None:
            self._close(window)
        rt.recover()
        self.record({"t": self.loop.now_ns, "node": node, "event": "recover"})

    def _degrade(self, key: int, fault: LinkFault) -> Callable[[], None]:
        c = fault.change
        pairs = [(c.src, c.dst)] + ([(c.dst, c.src)] if c.both else [])
        self.network.degrade(key, pairs, c.latency, c.bandwidth_bps, c.loss, c.duplicate,
                             c.reorder)
        arrow = "<->" if c.both else "->"
        self._window("link", f"{c.src}{arrow}{c.dst}", key, f"link {c.src}{arrow}{c.dst}")
        return lambda: self._end_network(key)

    def _slow(self, fault: SlowFault) -> Callable[[], None]:
        nodes = self.resolve(fault.node)
        for node in nodes:
            self.runtimes[node].slowdown = fault.factor
            self._window("slow", node, f"slow:{node}", f"{node} CPU x{fault.factor:g} slower")

        def end() -> None:
            for node in nodes:
                self.runtimes[node].slowdown = 1.0
                window = self._open.get(("slow", f"slow:{node}"))
                if window is not None:
                    self._close(window)

        return end

    def _byzantine(self, fault: ByzantineFault) -> Callable[[], None]:
        behavior = fault.behavior
        name = behavior["name"]
        coalition = self.coalitions.setdefault(
            name, Coalition(name, self.scenario.node_ids, self.scenario.f))
        nodes = self.resolve(fault.node)
        for node in nodes:
            if node in self.shells:
                continue
            shell = ByzantineShell(self.replicas[node], behavior, coalition,
                                   random.Random(f"byzantine:{self.seed}:{node}"))
            self.shells[node] = shell
            self.byzantine_ever.add(node)
            self.checker.honest.discard(node)
            rt = self.runtimes[node]
            rt.core = shell
            rt.apply(shell.start_effects())
            self._window("byzantine", node, f"byz:{node}", f"{node} {name}")

        def end() -> None:
            for node in nodes:
                shell = self.shells.pop(node, None)
                if shell is None:
                    continue
                rt = self.runtimes[node]
                rt.core = shell.inner
                rt.apply(shell.stop(self.loop.now_ns))
                window = self._open.get(("byzantine", f"byz:{node}"))
                if window is not None:
                    self._close(window)

        return end

    def _tamper(self, fault: TamperFault) -> None:
        """Alter the stored data of the targeted replicas. A tampered replica is faulty from
        now on (it leaves the checker's honest set, as a Byzantine one does): the harm report
        shows when its checkpoint disagreed with the quorum and when state transfer repaired
        it (medbft/harm.py)."""
        assert self.tamper is not None, "the application cannot be tampered with"
        for node in self.resolve(fault.node):
            what = self.tamper(node, fault.target)
            self.checker.honest.discard(node)
            self.record({"t": self.loop.now_ns, "node": node, "event": "tamper",
                         "target": fault.target, "what": what})
