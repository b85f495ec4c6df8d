"""The whole scenario: the top-level fields, and the checks that need more than one section.

``Scenario`` is what the simulator and the real network are given: one validated, immutable run
description. Besides declaring the top-level fields (name, seed, duration, drain, nodes and the
sections of ``specs`` and ``faults``), it expands the count forms of ``nodes`` and checks what no
single section can: node ids are unique and not client ids, faults name existing nodes and fall
inside the run, links join known endpoints. Reading files and reporting errors is ``loading``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from medbft.scenario.base import _Spec
from medbft.scenario.errors import Loc, Problem, _fail, _names, _show
from medbft.scenario.faults import (
    LEDGER_BEHAVIORS,
    AnyFault,
    ByzantineFault,
    FaultSpec,
    RequestFault,
    TamperFault,
    _check_fault_entries,
    _is_node_id,
)
from medbft.scenario.fields import (
    CLIENT_ID_RE,
    ROLES,
    DurationNs,
    Name,
    PositiveDurationNs,
    Seed,
    Text,
)
from medbft.scenario.specs import (
    CpuSpec,
    ExpectSpec,
    NetworkSpec,
    NodeSpec,
    ProtocolSpec,
    WorkloadSpec,
    _cpu_none,
)
from medbft.units import format_duration_ns

__all__ = ["MAX_NODES", "Scenario", "expand_nodes", "simulation_problems"]

#: Upper bound for the count forms of ``nodes`` (guards against typos like ``nodes: 40000000``).
MAX_NODES = 10_000


def expand_nodes(value: Any) -> Any:
    """Expand the count forms of ``nodes`` into a list of ``{id, role}`` mappings.

    * ``7``: roles rotate hospital, pharmacy, regulator, hospital, ...; ids number each role from
      1: hospital-1, pharmacy-1, regulator-1, hospital-2, pharmacy-2, regulator-2, hospital-3.
    * ``{hospital: 3, pharmacy: 2, regulator: 2}``: ids hospital-1..3, then pharmacy-1..2, then
      regulator-1..2, following the key order of the mapping.
    * a list of ``{id, role}`` mappings is returned unchanged.
    """
    forms = ("a list of {id, role} mappings, a count such as 4, or role counts such as "
             "{hospital: 2, pharmacy: 1, regulator: 1}")
    if isinstance(value, list | tuple):
        return value
    if isinstance(value, bool) or not isinstance(value, int | Mapping):
        _fail(((), f"expected {forms}; got {_show(value)}"))
    if isinstance(value, int):
        if not 0 <= value <= MAX_NODES:
            _fail(((), f"expected a node count between 4 and {MAX_NODES}; got {value}"))
        seen = dict.fromkeys(ROLES, 0)
        nodes = []
        for i in range(value):
            role = ROLES[i % len(ROLES)]
            seen[role] += 1
            nodes.append({"id": f"{role}-{seen[role]}", "role": role})
        return nodes
    problems: list[tuple[Loc, str]] = []
    for role, count in value.items():
        if role not in ROLES:
            problems.append(((str(role),), f"unknown role {role!r}; allowed roles: "
                                           f"{', '.join(ROLES)}"))
        elif isinstance(count, bool) or not isinstance(count, int) or count < 0:
            problems.append(((role,), f"expected a whole number of {role} nodes >= 0, e.g. 2; "
                                      f"got {_show(count)}"))
    if problems:
        _fail(*problems)
    if sum(value.values()) > MAX_NODES:
        _fail(((), f"expected at most {MAX_NODES} nodes; got {sum(value.values())}"))
    return [{"id": f"{role}-{k}", "role": role}
            for role, count in value.items() for k in range(1, count + 1)]


class Scenario(_Spec):
    """A validated simulation run. Build it with ``load_scenario`` or ``parse_scenario``."""

    _NULL_IS_DEFAULT = frozenset(
        {"description", "seed", "drain", "network", "protocol", "workload", "faults", "expect"}
    )

    name: Name
    description: Text = ""
    seed: Seed = 1
    duration_ns: PositiveDurationNs = Field(alias="duration")
    drain_ns: DurationNs = Field(5_000_000_000, alias="drain")
    nodes: tuple[NodeSpec, ...]
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    protocol: ProtocolSpec = Field(default_factory=ProtocolSpec)
    cpu: Annotated[CpuSpec | None, BeforeValidator(_cpu_none)] = None
    workload: WorkloadSpec = Field(default_factory=WorkloadSpec)
    faults: tuple[AnyFault, ...] = ()
    expect: ExpectSpec = Field(default_factory=ExpectSpec)

    @property
    def n(self) -> int:
        """Number of replicas."""
        return len(self.nodes)

    @property
    def f(self) -> int:
        """Byzantine faults tolerated: the largest f with n >= 3f + 1."""
        return (self.n - 1) // 3

    @property
    def node_ids(self) -> tuple[str, ...]:
        return tuple(node.id for node in self.nodes)

    @property
    def clients(self) -> tuple[str, ...]:
        """Client ids: ``client-1 .. client-N`` (N = workload.clients), or for a ledger
        ``population`` ``<role>-<k>`` in role order."""
        return tuple(self.client_roles)

    @property
    def client_roles(self) -> dict[str, str]:
        """Client id -> role in the membership (``client`` for the key-value app)."""
        w = self.workload
        if w.app != "ledger":
            return {f"client-{i}": "client" for i in range(1, w.clients + 1)}
        if w.population:
            return {f"{role}-{k}": role for role, count in w.population.items()
                    for k in range(1, count + 1)}
        from node.ledger.roles import rotating_client_roles

        return rotating_client_roles(w.clients)

    @property
    def end_ns(self) -> int:
        """When the run stops: duration + drain."""
        return self.duration_ns + self.drain_ns

    def is_client(self, name: str) -> bool:
        if self.workload.population:
            return name in self.client_roles
        match = CLIENT_ID_RE.fullmatch(name)
        return match is not None and int(match[1]) <= self.workload.clients

    @field_validator("nodes", mode="before")
    @classmethod
    def _expand_nodes(cls, value: Any) -> Any:
        return expand_nodes(value)

    @field_validator("nodes", mode="after")
    @classmethod
    def _check_nodes(cls, nodes: tuple[NodeSpec, ...]) -> tuple[NodeSpec, ...]:
        problems: list[tuple[Loc, str]] = []
        if len(nodes) < 4:
            problems.append(((), f"expected at least 4 nodes: PBFT needs n >= 3f+1 replicas to "
                                 f"tolerate f faulty ones, and f >= 1 means n >= 4; "
                                 f"got {len(nodes)}"))
        first: dict[str, int] = {}
        for i, node in enumerate(nodes):
            if node.id in first:
                problems.append(((i, "id"), f"duplicate node id {node.id!r} (also nodes"
                                            f"[{first[node.id]}]); node ids must be unique"))
            elif CLIENT_ID_RE.fullmatch(node.id):
                problems.append(((i, "id"), f"{node.id!r} looks like a client id; client-<number> "
                                            f"is reserved for workload clients, use e.g. "
                                            f"hospital-{i + 1}"))
            first.setdefault(node.id, i)
        if problems:
            _fail(*problems)
        return nodes

    @field_validator("faults", mode="before")
    @classmethod
    def _fault_entries(cls, value: Any) -> Any:
        return _check_fault_entries(value)

    @field_validator("faults", mode="after")
    @classmethod
    def _check_faults(cls, faults: tuple[FaultSpec, ...],
                      info: ValidationInfo) -> tuple[FaultSpec, ...]:
        nodes: tuple[NodeSpec, ...] | None = info.data.get("nodes")
        duration, drain = info.data.get("duration_ns"), info.data.get("drain_ns")
        problems: list[tuple[Loc, str]] = []
        for i, fault in enumerate(faults):
            if duration is not None and drain is not None:
                end = duration + drain
                for key, t in fault.times():
                    if t > end:
                        problems.append(((i, key), (
                            f"{format_duration_ns(t)} is after the end of the run; expected a "
                            f"time from 0s to {format_duration_ns(end)} (duration "
                            f"{format_duration_ns(duration)} + drain {format_duration_ns(drain)})"
                        )))
            if nodes is not None:
                ids = [node.id for node in nodes]
                refs = list(fault.node_refs())
                for path, target in getattr(fault, "targets", tuple)():
                    if _is_node_id(target):
                        refs.append((path, target))
                    elif target.startswith("role:") and not any(
                            nd.role == target[5:] for nd in nodes):
                        present = _names(sorted({nd.role for nd in nodes}))
                        problems.append(((i, *path), f"no node has role {target[5:]!r}; roles "
                                                     f"present: {present}"))
                    elif target.startswith("random:") and int(target[7:]) > len(nodes):
                        problems.append(((i, *path), f"random: {target[7:]} asks for more nodes "
                                                     f"than the network has ({len(nodes)})"))
                for path, ref in refs:
                    if ref not in ids:
                        problems.append(((i, *path), f"unknown node {ref!r}; known nodes: "
                                                     f"{_names(ids)}"))
        if problems:
            _fail(*problems)
        return tuple(sorted(faults, key=lambda fault: fault.at_ns))

    @model_validator(mode="after")
    def _check_request_faults(self) -> Scenario:
        """A `request` fault names one of the scenario's clients."""
        problems: list[tuple[Loc, str]] = [
            (("faults", i, "request"), f"unknown client {fault.client!r}; clients: " + (
                _names(self.clients) if self.workload.population
                else f"client-1 .. client-{self.workload.clients}"))
            for i, fault in enumerate(self.faults)
            if isinstance(fault, RequestFault) and not self.is_client(fault.client)]
        if problems:
            _fail(*problems)
        return self

    @model_validator(mode="after")
    def _check_ledger_faults(self) -> Scenario:
        """Tampering and the ledger-aware behaviours act on ledger data: they need the ledger."""
        if self.workload.app == "ledger":
            return self
        problems: list[tuple[Loc, str]] = []
        for i, fault in enumerate(self.faults):
            if isinstance(fault, TamperFault):
                problems.append((("faults", i, "tamper"), (
                    f"tampering alters a replica's ledger, but workload.app is "
                    f"{self.workload.app}; use workload.app: ledger")))
            elif isinstance(fault, ByzantineFault) and fault.behavior["name"] in LEDGER_BEHAVIORS:
                problems.append((("faults", i, "behavior"), (
                    f"behavior {fault.behavior['name']} reads ledger transactions, but "
                    f"workload.app is {self.workload.app}; use workload.app: ledger")))
        if problems:
            _fail(*problems)
        return self

    @model_validator(mode="after")
    def _check_links(self) -> Scenario:
        ids = self.node_ids
        known = f"known nodes: {_names(ids)}; clients: " + (
            _names(self.clients) if self.workload.population
            else f"client-1 .. client-{self.workload.clients}")
        problems: list[tuple[Loc, str]] = [
            (("workload", "population"), f"client id {c!r} is also a node id; rename the node")
            for c in self.clients if c in ids]
        for i, link in enumerate(self.network.links):
            where: Loc = ("network", "links", i)
            ends: tuple[Loc, Loc] = ((("between", 0), ("between", 1)) if link.both
                                     else (("from",), ("to",)))
            for path, name in zip(ends, (link.src, link.dst), strict=True):
                if name not in ids and not self.is_client(name):
                    problems.append(((*where, *path), f"unknown endpoint {name!r}; {known}"))
            if self.is_client(link.src) and self.is_client(link.dst):
                problems.append((where, "clients only exchange messages with nodes, so a link "
                                        "between two clients has no effect; name a node"))
        if problems:
            _fail(*problems)
        return self


def simulation_problems(scenario: Scenario) -> list[Problem]:
    """What stops ``scenario`` from running in the simulator, though it is a valid network.

    Zero-delay links with no CPU cost and no bandwidth limit let every message arrive at the
    instant it is sent: a closed-loop client then commits for ever at virtual time 0 and the
    run never ends. (A real cluster has no such problem: its links take real time.)
    """
    net = scenario.network
    zero = net.latency.dist == "constant" and not net.latency.value_ns
    if (zero and scenario.cpu is None and net.bandwidth_bps is None
            and not any(link.latency is not None or link.bandwidth_bps is not None
                        for link in net.links)):
        return [Problem("network.latency",
                        "is 0 while cpu is none and no bandwidth is set, so in the simulator "
                        "messages arrive the instant they are sent and virtual time never "
                        "advances; give the links a latency (e.g. network: {latency: 1ms}) or "
                        "the replicas a CPU model (cpu: default)")]
    return []
