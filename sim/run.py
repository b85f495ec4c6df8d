"""One simulated run: assemble a network from a scenario, run it on virtual time, measure it.

Why this exists: it is the single place that turns a validated `Scenario` into running parts
(identities, replicas, runtimes, the network model, clients, timed faults), drives the
virtual-time loop to the end of the run, and hands the record to the checker and metrics.

Determinism: every random stream is derived from the seed by name (network, workload), keys
are derived from the seed, the loop breaks ties in scheduling order, and nothing here reads
the wall clock except to report `wall_time_s` (kept out of every digest).

Progress: `run_scenario(..., progress=fn)` runs the loop in slices of virtual time
(`PROGRESS_SLICES` per duration) and calls `fn(sim_now_ns, duration_ns, committed, submitted)`
between slices. Slicing changes nothing a run records (see `VirtualTimeLoop.run_until_ns`);
`fn` only reads those numbers and must not touch the run. The wall clock and the rendering are
the caller's (medbft/progress.py).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from medbft.apps import make_app
from medbft.metrics import RequestRecord, Traffic
from medbft.scenario import Scenario, scenario_hash
from medbft.summary import Measured, build_summary, code_version
from medbft.targets import fault_rng
from medbft.traffic.workload import Workload
from node.client import Accepted, Client
from node.config import Config
from node.crypto import Costs, Identity, Keyring, VerifyCache
from node.events import Trace
from node.membership import Member, Membership
from node.pbft import Replica
from node.runtime import Cores, NodeRuntime, Processor
from sim.checker import Checker
from sim.cpu import CpuCosts, client_cost_model, cost_model
from sim.events import EventLog
from sim.faults import FaultInjector
from sim.loop import VirtualTimeLoop
from sim.network import Network
from sim.tracing import MessageFields, accept_row

__all__ = ["PROGRESS_SLICES", "ProgressFn", "RunResult", "SimTransport", "digest_summary",
           "run_scenario"]

#: `progress(sim_now_ns, duration_ns, committed_so_far, submitted_so_far)`.
ProgressFn = Callable[[int, int, int, int], None]
#: With a progress callback the run goes in slices of duration / PROGRESS_SLICES of virtual
#: time (at least `_MIN_SLICE_NS`), the drain after the duration in slices of the same length.
PROGRESS_SLICES = 200
_MIN_SLICE_NS = 1_000_000
#: Whether a finished run's objects may still wait for the collector, and the oldest
#: generation they can be in (0: none left). A run's replicas, ledgers and loop refer to each
#: other, so once its results are out they are cyclic garbage, and the thresholds a run sets
#: (below) make the collections that would free them rare: a process running one scenario
#: after another (a sweep's or the fuzzer's workers, the test suite) grew by every run's
#: memory, 5 MB per simulated second at n = 4 (40 one-second runs: 58 -> 260 MB; 100 fuzz
#: seeds: 286 MB at the peak). The next run therefore starts by collecting them: the two
#: young generations when no older collection ran during the run (a short run), which does
#: not walk the modules' objects (8 ms, 3-5% of a short run); a full collection otherwise.
#: A process that runs one scenario and exits pays nothing.
_GARBAGE_LEFT: Final[list[int]] = [0]
#: A collection threshold never reached.
_NEVER: Final = 1 << 30


@dataclass
class RunResult:
    summary: dict[str, Any]
    requests: list[RequestRecord]
    trace: list[dict[str, Any]]
    events: EventLog
    ledger: dict[str, Any] | None = None  # app: ledger: what medbft.apps saves


class SimTransport:
    """Carries bytes between runtimes through the network model, on the virtual loop.

    Deliveries that arrive at the same instant, one after another (the copies of a multicast
    over links of equal latency), share one timer: `_deliver_group` hands them over in the
    order they were sent, exactly as separate timers would (VirtualTimeLoop.is_last_pending).
    At n replicas that is one heap entry per multicast instead of n - 1.
    """

    def __init__(self, loop: VirtualTimeLoop, network: Network, traffic: Traffic,
                 record: list[dict[str, Any]] | None) -> None:
        self.loop = loop
        self.network = network
        self.traffic = traffic
        self.record = record
        self.endpoints: dict[str, NodeRuntime | _TracedEndpoint] = {}
        self.in_flight = 0
        self._context = contextvars.copy_context()  # deliveries set no context variables
        self._group: list[tuple[str, bytes]] = []
        self._group_at = -1
        self._group_timer: asyncio.TimerHandle | None = None
        # A full trace only (`_trace_send`): the send rows of messages on their way.
        self.message_fields = MessageFields()
        self.in_flight_rows: dict[tuple[str, int, int], dict[str, Any]] = {}
        #: Told of each REQUEST sent (receiver, bytes, arrival times): the harm judge's view
        #: of which replica received which request first (medbft/harm.py). None: not wanted.
        self.request_watch: Callable[[str, bytes, tuple[int, ...]], None] | None = None

    def send(self, src: str, to: str, data: bytes, kind: str) -> None:
        loop = self.loop
        now = loop.now_ns
        nbytes = len(data)
        self.traffic.count(src, kind, nbytes)
        arrivals = self.network.deliveries(src, to, nbytes, now)
        if self.record is not None:
            row = {"t": now, "node": src, "event": "send", "to": to, "kind": kind,
                   "bytes": nbytes, "lost": not arrivals, "arrive": list(arrivals)}
            self.record.append(row)
            self._trace_send(row, to, data, arrivals)
        if self.request_watch is not None and kind == "REQUEST":
            self.request_watch(to, data, tuple(arrivals))
        if not arrivals:
            self.traffic.lost += 1
            return
        self._schedule(to, data, arrivals)

    def _schedule(self, to: str, data: bytes, arrivals: list[int]) -> None:
        """Deliver `data` to `to` at each of `arrivals`: a copy arriving at the instant of the
        latest delivery group joins it while that group's timer is the last one scheduled
        (`VirtualTimeLoop.is_last_pending`: the order is then the same as a timer of its own)."""
        loop = self.loop
        for arrival in arrivals:
            self.in_flight += 1
            timer = self._group_timer
            if (arrival == self._group_at and timer is not None
                    and loop.is_last_pending(timer)):
                self._group.append((to, data))
                continue
            group = [(to, data)]
            self._group, self._group_at = group, arrival
            self._group_timer = loop.call_at_ns(arrival, self._deliver_group, group,
                                                context=self._context)

    def multicast(self, src: str, tos: tuple[str, ...], datas: tuple[bytes, ...],
                  kind: str) -> None:
        """`send` each copy in order, with the per-copy bookkeeping done once. A full trace or
        a request watch wants a row per copy: then each copy goes through `send`. Otherwise
        the copies are counted together (the counters only sum) and each is delivered as
        `send` would, the network drawing for them in the same order. When every copy goes
        to a replica over a link of one constant delay with no fault active
        (`Network.mesh_fixed_ns`: nothing drawn, nothing lost), they all arrive at now +
        delay and join one delivery group in one go, exactly where the per-copy path would
        put them."""
        if not tos or self.record is not None or kind == "REQUEST":
            for to, data in zip(tos, datas, strict=True):
                self.send(src, to, data, kind)
            return
        count = len(tos)
        self.traffic.count_many(src, kind, count, sum(map(len, datas)))
        loop = self.loop
        network = self.network
        fixed = network.mesh_fixed_ns
        if fixed is None or not network.replicas.issuperset(tos):
            now = loop.now_ns
            deliveries = network.deliveries
            for to, data in zip(tos, datas, strict=True):
                arrivals = deliveries(src, to, len(data), now)
                if arrivals:
                    self._schedule(to, data, arrivals)
                else:
                    self.traffic.lost += 1
            return
        self.in_flight += count
        arrival = loop.now_ns + fixed
        timer = self._group_timer
        if arrival == self._group_at and timer is not None and loop.is_last_pending(timer):
            self._group.extend(zip(tos, datas, strict=True))
            return
        group = list(zip(tos, datas, strict=True))
        self._group, self._group_at = group, arrival
        self._group_timer = loop.call_at_ns(arrival, self._deliver_group, group,
                                            context=self._context)

    def _trace_send(self, row: dict[str, Any], to: str, data: bytes,
                    arrivals: list[int]) -> None:
        """A full trace only: the message's view, seq and digest as sent to `to`
        (sim/tracing.py), why it was lost, and where to find the row if it reaches a crashed party
        (`_TracedEndpoint`)."""
        row.update(self.message_fields(data))
        if not arrivals:
            network = self.network
            row["reason"] = network.cut_reason(row["node"], to) or (
                "loss" if network.link(row["node"], to) is not None else "no link")
        for arrival in arrivals:
            self.in_flight_rows[(to, arrival, id(data))] = row

    def _deliver_group(self, group: list[tuple[str, bytes]]) -> None:
        endpoints = self.endpoints
        for to, data in group:
            self.in_flight -= 1
            endpoints[to].receive(data)


class _TracedEndpoint:
    """A runtime seen through a full trace: a message that arrives while the party is crashed
    is lost, and its send row says so (`"lost": true, "reason": "crashed"`), so a chart never
    draws it as delivered. Only runs with --trace use it; the runtime's own behaviour (it
    ignores what arrives while crashed) is unchanged."""

    __slots__ = ("loop", "rows", "rt")

    def __init__(self, rt: NodeRuntime, transport: SimTransport) -> None:
        self.rt = rt
        self.loop = transport.loop
        self.rows = transport.in_flight_rows

    def receive(self, data: bytes) -> None:
        row = self.rows.pop((self.rt.id, self.loop.now_ns, id(data)), None)
        if row is not None and self.rt.crashed:
            row["lost"] = True
            row["reason"] = "crashed"
        self.rt.receive(data)


class _Run:
    """The parts of one run, wired together (kept private: `run_scenario` is the interface)."""

    def __init__(self, scenario: Scenario, seed: int, trace: bool) -> None:
        self.scenario = scenario
        self.seed = seed
        self.loop = VirtualTimeLoop()
        self.traffic = Traffic()
        self.trace: list[dict[str, Any]] = []
        self.events = EventLog()
        self.full_trace = trace
        self.rejected: dict[str, int] = {}
        self.ignored: dict[str, int] = {}
        self.checker = Checker(honest=set(scenario.node_ids))
        seed_bytes = f"medbft-seed:{seed}".encode()
        parties = list(scenario.node_ids) + list(scenario.clients)
        idents = {p: Identity.from_seed(p, seed_bytes) for p in parties}
        self.membership = Membership(
            tuple(Member(nd.id, nd.role, idents[nd.id].public_bytes) for nd in scenario.nodes),
            tuple(Member(c, role, idents[c].public_bytes)
                  for c, role in scenario.client_roles.items()),
        )
        self.app = make_app(scenario, self.membership, seed)  # the ledger, or key-value
        self.network = Network(scenario.node_ids, scenario.clients, scenario.network,
                               random.Random(f"medbft:{seed}:network"))
        self.transport = SimTransport(self.loop, self.network, self.traffic,
                                      self.trace if trace else None)
        self.transport.request_watch = self.app.request_watch()
        self.cpu = CpuCosts.from_spec(scenario.cpu)
        # One model for all replicas; with pauses, one each (each draws from its own stream).
        cpu = self.cpu
        shared = cost_model(cpu) if cpu is not None and not cpu.pauses else None
        # `cpu.cores`: the whole network on one machine; `cpu.client`: the load generator's
        # CPU, one processor for all clients (sim/cpu.py).
        cores = (Cores(self.cpu.cores, self.loop)
                 if self.cpu is not None and self.cpu.cores is not None else None)
        client_model = (client_cost_model(
                            self.cpu, random.Random(f"medbft:{seed}:cpu-clients"))
                        if self.cpu is not None and self.cpu.client else None)
        loadgen = Processor()
        p = scenario.protocol
        config = Config.from_mapping(p.model_dump())
        cache = VerifyCache()
        pubs = self.membership.public_keys()
        self.replicas: dict[str, Replica] = {}
        self.runtimes: dict[str, NodeRuntime] = {}
        for nid in scenario.node_ids:
            replica = Replica(self.membership, nid, Keyring(idents[nid], pubs, Costs(), cache),
                              self.app.state_machine(nid), config)
            self.replicas[nid] = replica
            model = (cost_model(cpu, random.Random(f"medbft:{seed}:cpu:{nid}"))
                     if cpu is not None and cpu.pauses else shared)
            rt = NodeRuntime(replica, self.transport, self.loop, cost_model=model,
                             cores=cores, trace=self._on_trace)
            self.runtimes[nid] = rt
            self.transport.endpoints[nid] = _TracedEndpoint(rt, self.transport) if trace else rt
        clients: dict[str, tuple[Client, NodeRuntime]] = {}
        self.client_runtimes: list[NodeRuntime] = []
        for cid in scenario.clients:
            core = Client(self.membership, Keyring(idents[cid], pubs, Costs(), cache),
                          p.client_timeout_ns)
            rt = NodeRuntime(core, self.transport, self.loop, cost_model=client_model,
                             processor=loadgen, cores=cores if client_model else None,
                             trace=self._on_trace,
                             on_other=functools.partial(self._client_effect, cid))
            clients[cid] = (core, rt)
            self.client_runtimes.append(rt)
            self.transport.endpoints[cid] = rt
        self.faults = FaultInjector(
            scenario, self.loop, self.runtimes, self.replicas, self.network, self.checker,
            fault_rng(seed), self._record, seed, tamper=self.app.tamper)
        self.workload = Workload(scenario.workload, clients, scenario.duration_ns,
                                 random.Random(f"medbft:{seed}:workload"),
                                 on_submit=self.checker.submitted.add,
                                 ops=self.app.traffic, may_submit=self.app.gateway(self.runtimes))
        self.faults.submit = self.workload.submit_one  # `request` faults

    # -- recording ----------------------------------------------------------------------------

    def _client_effect(self, cid: str, eff: object) -> None:
        self.workload.on_effect(cid, eff)
        if self.full_trace and type(eff) is Accepted:
            self.trace.append(accept_row(self.loop.now_ns, cid, eff))

    def _on_trace(self, node: str, now_ns: int, tr: Trace) -> None:
        fields = tr.fields
        event = tr.event
        if event == "drop":
            table = self.rejected if fields.get("bad") else self.ignored
            table[fields["reason"]] = table.get(fields["reason"], 0) + 1
            if self.full_trace:
                self.trace.append({"t": now_ns, "node": node, "event": event, **fields})
            return
        if event == "execute":
            self.checker.on_execute(node, fields["seq"], fields["digest"], fields["executed"])
        elif event == "checkpoint":
            self.checker.on_checkpoint(node, fields["seq"], fields["digest"])
        self.events.add(now_ns, node, event, fields)
        if self.full_trace:
            self.trace.append({"t": now_ns, "node": node, "event": event, **fields})

    def _record(self, row: dict[str, Any]) -> None:
        self.events.append(row)
        if self.full_trace:
            self.trace.append(row)

    # -- running ------------------------------------------------------------------------------

    def start(self) -> None:
        """Schedule the faults, start the replicas and the clients (time 0: nothing ran yet).
        `run` calls it; the studio's stepwise driver (sim/stepper.py) calls it, then advances
        the loop itself."""
        self.faults.schedule()
        for nid in self.scenario.node_ids:
            self.runtimes[nid].start()
        self.workload.start()

    def finished(self) -> bool:
        """The clients have submitted for the whole duration, every request is settled and no
        message is in flight: the run is over (checked after each batch of callbacks)."""
        w, t = self.workload, self.transport
        return (self.loop.now_ns >= self.scenario.duration_ns and w.settled == w.submitted
                and t.in_flight == 0)

    def run(self, progress: ProgressFn | None = None) -> None:
        self.start()
        duration = self.scenario.duration_ns
        w, t = self.workload, self.transport

        def finished() -> bool:  # as self.finished, with fewer lookups (checked very often)
            return (self.loop.now_ns >= duration and w.settled == w.submitted
                    and t.in_flight == 0)

        end = self.scenario.end_ns
        if progress is None:
            self.loop.run_until_ns(end, stop_when=finished)
            return
        step = max(_MIN_SLICE_NS, duration // PROGRESS_SLICES)
        first = True
        while True:
            deadline = min(end, self.loop.now_ns + step)
            # check_first=False after the first slice: the predicate is then evaluated only
            # where one run_until_ns(end) call would evaluate it (after a batch of callbacks).
            if self.loop.run_until_ns(deadline, stop_when=finished, check_first=first):
                break
            first = False
            if self.loop.now_ns >= end:
                break
            progress(self.loop.now_ns, duration, w.settled, w.submitted)
        progress(self.loop.now_ns, duration, w.settled, w.submitted)

    def close(self) -> None:
        self.loop.close()


def run_scenario(scenario: Scenario, *, seed: int | None = None, trace: bool = False,
                 progress: ProgressFn | None = None) -> RunResult:
    """Run `scenario` (with `seed` instead of its own, if given) and return its results.

    `progress`, if given, is called between slices of virtual time and once at the end (see
    the module docstring); it does not change the results."""
    seed = scenario.seed if seed is None else seed
    if _GARBAGE_LEFT[0]:
        gc.collect(_GARBAGE_LEFT[0])
        _GARBAGE_LEFT[0] = 0
    wall_start = time.perf_counter()
    # A run allocates millions of short-lived objects and keeps few: collect the young
    # generation less often (measured: ~15% of wall time went to the collector otherwise).
    thresholds = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    older = _older_collections()
    run = None
    done = False
    try:
        run = _Run(scenario, seed, trace)
        run.run(progress)
        # What the run built stays alive until the results are out, and the summary (the harm
        # judge replays the ledger) allocates: a collection of generation 1 would walk all of
        # it for nothing (0.1 s after a 20 s run at n = 4). Until then only the young
        # generation is collected; the run's objects stay in the young generations, where
        # the next run's first collection finds them (see _GARBAGE_LEFT).
        gc.set_threshold(50_000, _NEVER, _NEVER)
        summary = _summarise(run, seed)
        _assign_seqs(run)
        records = sorted(run.workload.records.values(),
                         key=lambda r: (r.submit_ns, r.client, r.session))
        artifacts = run.app.artifacts(run)
        result = RunResult(summary, records, run.trace, run.events, artifacts)
        done = True
    finally:
        if run is not None:
            run.close()
        _GARBAGE_LEFT[0] = 2 if _older_collections() > older else 1
        if not done:
            gc.set_threshold(*thresholds)
    summary["wall_time_s"] = round(time.perf_counter() - wall_start, 3)
    # The usual thresholds come back only once nothing here holds the run any more: the
    # run's many young collections make the next one likely to be of generation 1, and one
    # that ran while `run` was still held walked everything the run built without freeing
    # any of it, then moved it all to the oldest generation.
    run = None
    gc.set_threshold(*thresholds)
    return result


def _older_collections() -> int:
    """Collections of generations 1 and 2 so far: each moves what survives it to the oldest
    generation, which only a full collection walks."""
    stats = gc.get_stats()
    return int(stats[1]["collections"]) + int(stats[2]["collections"])


def _assign_seqs(run: _Run) -> None:
    seqs: dict[str, int] = {}
    for executed, seq in run.events.fields(("execute",), ("executed", "seq")):
        for key in executed:
            seqs.setdefault(key, seq)
    for record in run.workload.records.values():
        record.seq = seqs.get(record.key)


def _summarise(run: _Run, seed: int) -> dict[str, Any]:
    """What the simulator saw, handed to the one summary builder (medbft.summary)."""
    sc = run.scenario
    w = run.workload
    now = run.loop.now_ns
    views_entered = {row["view"] for row in run.events.select(("enter-view",))}
    live = [r for r in run.replicas.values() if not run.runtimes[r.id].crashed]
    active_views = [r.view for r in live if r.view_active and r.id in run.checker.honest]
    last_commit = max((r.commit_ns for r in w.records.values() if r.commit_ns), default=0)
    verdicts = run.checker.verdicts(
        w.settled, w.submitted,
        {"last_commit_s": round(last_commit / 1e9, 9)},
    )
    traffic = run.traffic
    return build_summary(Measured(
        scenario=sc.name, scenario_hash=scenario_hash(sc), version=code_version(),
        mode="sim", transport="sim", seed=seed, n=sc.n, f=sc.f,
        duration_ns=sc.duration_ns, sim_time_ns=now,
        records=list(w.records.values()), submitted=w.submitted, settled=w.settled,
        messages={
            "total": traffic.total,
            "bytes": traffic.bytes,
            "lost": traffic.lost,
            "lost_by_reason": dict(sorted(run.network.lost_by_reason.items())),
            "duplicated": run.network.duplicated,
            "reordered": run.network.reordered,
            "by_type": dict(sorted(traffic.by_type.items())),
            "bytes_by_type": dict(sorted(traffic.bytes_by_type.items())),
            "by_node": dict(sorted(traffic.by_node.items())),
            "bytes_by_node": dict(sorted(traffic.bytes_by_node.items())),
        },
        faults=[w.as_dict() for w in run.faults.windows],
        byzantine=sorted(run.faults.byzantine_ever),
        views_entered=len(views_entered),
        final_view=max(active_views, default=0),
        stable_checkpoint=max((r.h for r in run.replicas.values()), default=0),
        state_transfers=sum(1 for _ in run.events.select(("state-transfer",))),
        rejected=run.rejected, ignored=run.ignored,
        cpu=_cpu_summary(run, now),
        nodes={r.id: {"view": r.view, "last_executed": r.last_executed,
                      "stable_checkpoint": r.h} for r in live},
        safety={"ok": verdicts.safety_ok, "violations": verdicts.violations[:50],
                "checked_seqs": run.checker.checked_seqs()},
        liveness=verdicts.liveness,
        ledger=run.app.summarise(run),
        harm=run.app.harm(run),
    ), sc.expect)


def _cpu_summary(run: _Run, now_ns: int) -> dict[str, Any]:
    if run.cpu is None:
        return {"model": "none"}
    util = {nid: round(rt.busy_ns / now_ns, 6) if now_ns else 0.0
            for nid, rt in sorted(run.runtimes.items())}
    out: dict[str, Any] = {"model": "costs", "costs_ns": run.cpu.as_dict(), "utilisation": util}
    if run.cpu.client and now_ns:  # one load generator for all clients
        out["load_generator_utilisation"] = round(
            sum(rt.busy_ns for rt in run.client_runtimes) / now_ns, 6)
    return out


def digest_summary(summary: dict[str, Any]) -> str:
    """A digest of everything in a summary that must be identical for one seed."""
    stable = {k: v for k, v in summary.items() if k != "wall_time_s"}
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()
