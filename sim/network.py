"""The simulated network: who can reach whom, how long it takes, what gets lost.

Why this exists: PBFT's latency and message load are shaped by the links between
organisations (a regulator on a slow WAN link, a hospital behind a lossy line). The topology
is a directed graph over replicas and clients (as a networkx graph when asked for: `graph`),
a full mesh by default; each directed edge carries a latency distribution, an optional
bandwidth (serialisation delay and a FIFO queue per link) and a loss probability. Scenario
`links:` entries override single edges.

Faults change it for a while: partitions (messages between groups are lost), isolated
endpoints, and link faults that override a link's latency, loss or bandwidth and add
duplication and reordering (sim/faults.py turns scenario entries into these calls).

What it must not know: message contents or PBFT. It answers one question per packet,
`deliveries(src, dst, nbytes, now_ns) -> arrival times` (none: lost; two: duplicated),
drawing randomness only from the seeded `random.Random` it is given, in call order (so one
seed gives one run).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["LinkState", "Network", "latency_sampler"]

Sampler = Callable[[random.Random], int]


def latency_sampler(spec: object) -> Sampler:
    """Turn a scenario LatencySpec into a function rng -> delay in integer nanoseconds.

    normal is truncated at zero; lognormal takes the mean and std of the delay itself.
    """
    dist = getattr(spec, "dist")
    if dist == "constant":
        return ConstantDelay(int(getattr(spec, "value_ns")))
    if dist == "uniform":
        low, high = int(getattr(spec, "low_ns")), int(getattr(spec, "high_ns"))
        return lambda rng: round(rng.uniform(low, high))
    if dist == "normal":
        mean, std = getattr(spec, "mean_ns"), getattr(spec, "std_ns")
        return lambda rng: max(0, round(rng.gauss(mean, std)))
    if dist == "lognormal":
        mean, std = float(getattr(spec, "mean_ns")), float(getattr(spec, "std_ns"))
        sigma2 = math.log(1.0 + (std * std) / (mean * mean))
        mu, sigma = math.log(mean) - sigma2 / 2.0, math.sqrt(sigma2)
        return lambda rng: round(rng.lognormvariate(mu, sigma))
    if dist == "exponential":
        mean = float(getattr(spec, "mean_ns"))
        return lambda rng: round(rng.expovariate(1.0 / mean))
    raise ValueError(f"unknown latency distribution {dist!r}")


@dataclass(slots=True)
class LinkState:
    latency: Sampler
    bandwidth_bps: int | None
    loss: float
    busy_until_ns: int = 0
    duplicate: float = 0.0
    reorder: float = 0.0
    fixed_ns: int | None = None
    """The delay of every packet when nothing on this link draws a random number or queues
    (constant latency, no loss, bandwidth, reordering or duplication): `deliveries` then
    skips the general path. Set once the link is configured; None otherwise."""


class ConstantDelay:
    """A constant latency (a `Sampler` that ignores its rng): one that `LinkState.fixed_ns`
    can recognise."""

    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        self.value = value

    def __call__(self, rng: random.Random) -> int:
        return self.value


@dataclass(slots=True)
class LinkFaultOverlay:
    """A temporary override of some links (a scenario `link:` fault), identified by `key`."""

    key: int
    pairs: frozenset[tuple[str, str]]
    latency: Sampler | None
    bandwidth_bps: int | None
    loss: float | None
    duplicate: float
    reorder: float


class Network:
    """Directed links between named endpoints, with per-link latency, bandwidth and loss."""

    def __init__(
        self,
        nodes: Iterable[str],
        clients: Iterable[str],
        network_spec: object,
        rng: random.Random,
    ) -> None:
        self.rng = rng
        self.nodes = tuple(nodes)
        self.clients = tuple(clients)
        default = LinkState(
            latency_sampler(getattr(network_spec, "latency")),
            getattr(network_spec, "bandwidth_bps", None),
            float(getattr(network_spec, "loss", 0.0)),
        )
        # Successors per endpoint, in insertion order: replicas first, then clients, each
        # one's links in the order they were added (the order networkx's graph keeps too).
        adjacency: dict[str, dict[str, LinkState]] = {e: {} for e in (*self.nodes,
                                                                     *self.clients)}
        endpoints = [(a, b) for a in self.nodes for b in self.nodes if a != b]
        endpoints += [(c, r) for c in self.clients for r in self.nodes]
        endpoints += [(r, c) for c in self.clients for r in self.nodes]
        for a, b in endpoints:
            adjacency[a][b] = LinkState(default.latency, default.bandwidth_bps, default.loss)
        for link in getattr(network_spec, "links", ()):
            pairs = [(link.src, link.dst)]
            if link.both:
                pairs.append((link.dst, link.src))
            for a, b in pairs:
                out = adjacency.setdefault(a, {})
                adjacency.setdefault(b, {})
                if b not in out:
                    out[b] = LinkState(default.latency, default.bandwidth_bps, default.loss)
                state = out[b]
                if link.latency is not None:
                    state.latency = latency_sampler(link.latency)
                if link.bandwidth_bps is not None:
                    state.bandwidth_bps = link.bandwidth_bps
                if link.loss is not None:
                    state.loss = link.loss
        self._links: dict[tuple[str, str], LinkState] = {
            (a, b): state for a, out in adjacency.items() for b, state in out.items()
        }
        self._endpoints = tuple(adjacency)  # as networkx would list them
        for state in self._links.values():
            if (type(state.latency) is ConstantDelay and not state.bandwidth_bps
                    and state.loss == 0.0 and state.duplicate == 0.0 and state.reorder == 0.0):
                state.fixed_ns = state.latency.value
        self.replicas = frozenset(self.nodes)
        delays = {self._links[(a, b)].fixed_ns for a in self.nodes for b in self.nodes
                  if a != b}
        self._mesh_fixed_ns = delays.pop() if len(delays) == 1 else None
        self.partitions: dict[int, dict[str, int]] = {}
        self.isolated: dict[int, frozenset[str]] = {}
        self.overlays: dict[int, LinkFaultOverlay] = {}
        self._faulty_links: dict[tuple[str, str], LinkState] = {}
        self.lost_by_reason: dict[str, int] = {}
        self.duplicated = 0
        self.reordered = 0

    # -- faults -------------------------------------------------------------------------------

    def partition(self, key: int, groups: Iterable[Iterable[str]]) -> None:
        """Cut replicas into groups (unlisted replicas form one more group); clients unaffected."""
        member: dict[str, int] = {}
        for i, group in enumerate(groups):
            for node in group:
                member[node] = i
        self.partitions[key] = member

    def isolate(self, key: int, endpoints: Iterable[str]) -> None:
        self.isolated[key] = frozenset(endpoints)

    def degrade(self, key: int, pairs: Iterable[tuple[str, str]], latency: object | None,
                bandwidth_bps: int | None, loss: float | None, duplicate: float | None,
                reorder: float | None) -> None:
        self.overlays[key] = LinkFaultOverlay(
            key, frozenset(pairs), latency_sampler(latency) if latency is not None else None,
            bandwidth_bps, loss, duplicate or 0.0, reorder or 0.0)
        self._rebuild_faulty_links()

    def end_fault(self, key: int) -> None:
        self.partitions.pop(key, None)
        self.isolated.pop(key, None)
        if self.overlays.pop(key, None) is not None:
            self._rebuild_faulty_links()

    def heal_all(self) -> None:
        self.partitions.clear()
        self.isolated.clear()
        self.overlays.clear()
        self._faulty_links.clear()

    def _rebuild_faulty_links(self) -> None:
        """The effective state of each faulted link: its base state with the overlays applied
        in the order the faults began (a later fault wins field by field)."""
        self._faulty_links = {}
        for key in sorted(self.overlays):
            ov = self.overlays[key]
            for pair in sorted(ov.pairs):
                base = self._faulty_links.get(pair) or self._links.get(pair)
                if base is None:
                    continue
                self._faulty_links[pair] = LinkState(
                    ov.latency or base.latency,
                    ov.bandwidth_bps if ov.bandwidth_bps is not None else base.bandwidth_bps,
                    ov.loss if ov.loss is not None else base.loss,
                    0, ov.duplicate or base.duplicate, ov.reorder or base.reorder,
                )

    @property
    def graph(self) -> Any:
        """The topology as a networkx DiGraph: endpoints with their `kind` (replica, client),
        each directed link with its `LinkState` as `link` (the objects the simulator uses).
        Built when asked for: the simulator itself reads `_links`, and importing networkx
        cost every run a tenth of a second."""
        import networkx as nx

        graph = nx.DiGraph()
        graph.add_nodes_from(self.nodes, kind="replica")
        graph.add_nodes_from(self.clients, kind="client")
        graph.add_nodes_from(self._endpoints)  # any a `links:` entry named besides
        for (a, b), state in self._links.items():
            graph.add_edge(a, b, link=state)
        return graph

    @property
    def mesh_fixed_ns(self) -> int | None:
        """The delay of every packet between two replicas, when it is one constant for all of
        them now (every replica-to-replica link fixed at the same value, no fault active):
        `deliveries` would then return [now + it] for each, drawing nothing. None otherwise."""
        if self.partitions or self.isolated or self._faulty_links:
            return None
        return self._mesh_fixed_ns

    def cut_reason(self, src: str, dst: str) -> str | None:
        """Why a packet from src to dst cannot get through now (None: it can)."""
        for ends in self.isolated.values():
            if src in ends or dst in ends:
                return "isolated"
        if src in self.replicas and dst in self.replicas:
            for member in self.partitions.values():
                if member.get(src, -1) != member.get(dst, -1):
                    return "partition"
        return None

    def link(self, src: str, dst: str) -> LinkState | None:
        return self._links.get((src, dst))

    def transmit(self, src: str, dst: str, nbytes: int, now_ns: int) -> int | None:
        """When a packet of `nbytes` sent now from src arrives at dst, or None if lost
        (the first copy only; see `deliveries` for duplication)."""
        arrivals = self.deliveries(src, dst, nbytes, now_ns)
        return arrivals[0] if arrivals else None

    def _lose(self, reason: str) -> list[int]:
        self.lost_by_reason[reason] = self.lost_by_reason.get(reason, 0) + 1
        return []

    def deliveries(self, src: str, dst: str, nbytes: int, now_ns: int) -> list[int]:
        """Arrival times of a packet of `nbytes` sent now from src to dst: [] when it is
        lost, two when a link fault duplicates it."""
        link = self._links.get((src, dst))
        if link is None:
            return self._lose("no link")
        if self.partitions or self.isolated:
            reason = self.cut_reason(src, dst)
            if reason is not None:
                return self._lose(reason)
        if self._faulty_links:
            link = self._faulty_links.get((src, dst), link)
        if link.fixed_ns is not None:  # the common case: what the general path below gives
            return [now_ns + link.fixed_ns]
        rng = self.rng
        if link.loss > 0.0 and rng.random() < link.loss:
            return self._lose("loss")
        depart = now_ns
        if link.bandwidth_bps:
            start = max(now_ns, link.busy_until_ns)
            depart = start + (nbytes * 8 * 1_000_000_000) // link.bandwidth_bps
            link.busy_until_ns = depart
        delay = link.latency(rng)
        if link.reorder > 0.0 and rng.random() < link.reorder:
            delay += round(rng.uniform(0, 2 * delay))  # held back: later packets overtake it
            self.reordered += 1
        arrivals = [depart + delay]
        if link.duplicate > 0.0 and rng.random() < link.duplicate:
            arrivals.append(depart + link.latency(rng))
            self.duplicated += 1
        return arrivals
