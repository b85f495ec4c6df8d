"""The simulated network: who can reach whom, how long it takes, what gets lost.

Why this exists: PBFT's latency and message load are shaped by the links between
organisations (a regulator on a slow WAN link, a hospital behind a lossy line). The topology
is a networkx directed graph over replicas and clients, a full mesh by default; each directed
edge carries a latency distribution, an optional bandwidth (serialisation delay and a FIFO
queue per link) and a loss probability. Scenario `links:` entries override single edges.

What it must not know: message contents or PBFT. It answers one question per packet,
`transmit(src, dst, nbytes, now_ns) -> arrival time or None`, drawing randomness only from
the seeded `random.Random` it is given, in call order (so one seed gives one run).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import networkx as nx

__all__ = ["LinkState", "Network", "latency_sampler"]

Sampler = Callable[[random.Random], int]


def latency_sampler(spec: object) -> Sampler:
    """Turn a scenario LatencySpec into a function rng -> delay in integer nanoseconds.

    normal is truncated at zero; lognormal takes the mean and std of the delay itself.
    """
    dist = getattr(spec, "dist")
    if dist == "constant":
        value = int(getattr(spec, "value_ns"))
        return lambda rng: value
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
        graph = nx.DiGraph()
        graph.add_nodes_from(self.nodes, kind="replica")
        graph.add_nodes_from(self.clients, kind="client")
        endpoints = [(a, b) for a in self.nodes for b in self.nodes if a != b]
        endpoints += [(c, r) for c in self.clients for r in self.nodes]
        endpoints += [(r, c) for c in self.clients for r in self.nodes]
        for a, b in endpoints:
            graph.add_edge(a, b, link=LinkState(default.latency, default.bandwidth_bps,
                                                default.loss))
        for link in getattr(network_spec, "links", ()):
            pairs = [(link.src, link.dst)]
            if link.both:
                pairs.append((link.dst, link.src))
            for a, b in pairs:
                if not graph.has_edge(a, b):
                    graph.add_edge(a, b, link=LinkState(default.latency, default.bandwidth_bps,
                                                        default.loss))
                state: LinkState = graph.edges[a, b]["link"]
                if link.latency is not None:
                    state.latency = latency_sampler(link.latency)
                if link.bandwidth_bps is not None:
                    state.bandwidth_bps = link.bandwidth_bps
                if link.loss is not None:
                    state.loss = link.loss
        self.graph = graph
        self._links: dict[tuple[str, str], LinkState] = {
            (a, b): d["link"] for a, b, d in graph.edges(data=True)
        }

    def link(self, src: str, dst: str) -> LinkState | None:
        return self._links.get((src, dst))

    def transmit(self, src: str, dst: str, nbytes: int, now_ns: int) -> int | None:
        """When a packet of `nbytes` sent now from src arrives at dst, or None if lost."""
        link = self._links.get((src, dst))
        if link is None:
            return None
        rng = self.rng
        if link.loss > 0.0 and rng.random() < link.loss:
            return None
        depart = now_ns
        if link.bandwidth_bps:
            start = max(now_ns, link.busy_until_ns)
            depart = start + (nbytes * 8 * 1_000_000_000) // link.bandwidth_bps
            link.busy_until_ns = depart
        return depart + link.latency(rng)
