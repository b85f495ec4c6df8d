"""Drive a real network with signed requests and measure it like a simulated run.

Why this exists: the simulator's numbers are only credible if the same workload, run against
real node processes, can be measured the same way. This runs the simulator's own
`medbft.traffic.workload.Workload` (closed loop with `outstanding` requests per client, or open-loop
Poisson `rate`) and `node.client.Client` cores, each in a `NodeRuntime` on a real loop, over
the HTTP or MQTT transport, and writes the same `summary.json` and `requests.csv`
(`medbft.cli.write_results`, `medbft.metrics`). Latency is measured by the client, from submission
to the acceptance of f+1 matching replies, on a monotonic clock.

Where a real run's numbers come from, since no simulator sees everything:
- requests, latency, throughput: the clients here;
- messages, view changes, state transfers, rejected/ignored messages: the nodes' `/status`
  counters, read before and after the run (the difference), plus what the clients sent;
- safety: the nodes' ledgers (`/ledger?digests=1`): no two nodes may hold different batches
  at one sequence number, and on a ledger network no two nodes at one block height may hold
  different chain heads (`/state`); liveness: every submitted request settled.

On a ledger network (`medbft keys init --app ledger`, the default) the clients submit the
simulator's ledger traffic (medbft/traffic/ledger.py) under their genesis roles, and the summary
gains a `ledger` section like a simulated run's; on a `kv` network they submit `put` ops.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from medbft.metrics import RequestRecord
from medbft.summary import Measured, build_summary, code_version
from node.client import Client
from node.crypto import Identity, Keyring
from node.netdir import NetworkDir, NetworkError
from node.reads import sign_read
from node.realtime import RealClock, steady_gc
from node.runtime import NodeRuntime
from node.tls import api_session
from node.transport.http import HttpTransport
from node.transport.mqtt import BrokerSettings, MqttTransport

__all__ = ["LoadResult", "LoadSpec", "check_ledgers", "client_ids", "fetch_json", "operator",
           "run_load", "scrape", "signed_get"]

HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)


@dataclass
class LoadSpec:
    """What load to offer, for how long, over which transport."""

    duration_ns: int
    clients: int | None = None
    """The first N of the network's client identities (None: all of them on a ledger
    network, one on a key-value network)."""
    outstanding: int | None = 1
    rate_per_s: float | None = None
    op_size_bytes: int = 64
    drain_ns: int = 5_000_000_000
    transport: str = "http"
    broker: str | None = None
    seed: int = 1
    connect_timeout_s: float = 10.0
    name: str = "load"
    flow: str = "mixed"
    """Ledger traffic (medbft/traffic/ledger.py): the kind mix, as a scenario's `workload.flow`."""
    mix: dict[str, float] | None = None
    invalid: float = 0.0
    scenario_hash: str | None = None
    """The scenario's hash when the load comes from a scenario file (`medbft cluster
    --scenario`)."""
    expect: Any = None
    """The scenario's `expect:` block (an `ExpectSpec`), judged against the summary."""


@dataclass
class LoadResult:
    summary: dict[str, Any]
    requests: list[RequestRecord]
    before: dict[str, dict[str, Any]] = field(default_factory=dict)
    after: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class _Party:
    client: Client
    runtime: NodeRuntime
    transport: HttpTransport | MqttTransport


# -- talking to nodes over their API ----------------------------------------------------------


def operator(net: NetworkDir) -> Identity:
    """The identity an operator's tool signs its reads with (node/reads.py): the first node
    whose private key the network directory holds (on one machine, all of them). Cached per
    directory and network id: a network written afresh at the same path (a second `medbft
    cluster` into one folder) has new keys."""
    key = (net.path, net.network_id)
    cached = _OPERATORS.get(key)
    if cached is not None:
        return cached
    for node_id in net.membership.node_ids:
        if (net.path / "keys" / f"{node_id}.pem").exists():
            ident = _OPERATORS[key] = net.identity(node_id)
            return ident
    raise NetworkError(f"{net.path}: no node key to sign reads with")


_OPERATORS: dict[tuple[Path, str], Identity] = {}


def signed_get(session: aiohttp.ClientSession, url: str, signer: Identity | None,
               **kw: Any) -> Any:
    """`session.get(url)`, the read signed by `signer` (none: unsigned)."""
    target = URL(url, encoded=True)
    headers = {} if signer is None else sign_read(signer, "GET", target.raw_path_qs)
    return session.get(target, headers=headers, **kw)


async def fetch_json(session: aiohttp.ClientSession, url: str,
                     signer: Identity | None = None) -> dict[str, Any] | None:
    """GET `url` as JSON (signed by `signer`, if given); None when the node is down or
    answers with an error."""
    try:
        async with signed_get(session, url, signer, timeout=HTTP_TIMEOUT) as resp:
            if resp.status != 200:
                return None
            return await resp.json()  # type: ignore[no-any-return]
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return None


async def scrape(session: aiohttp.ClientSession, net: NetworkDir) -> dict[str, dict[str, Any]]:
    """`/status` of every node that answers."""
    ids = net.membership.node_ids
    rows = await asyncio.gather(*(fetch_json(session, f"{net.url(i)}/status") for i in ids))
    return {i: row for i, row in zip(ids, rows, strict=True) if row is not None}


async def _digests(session: aiohttp.ClientSession, base: str, start: int,
                   end: int, signer: Identity) -> dict[int, str]:
    out: dict[int, str] = {}
    seq = start
    while seq <= end:
        page = await fetch_json(session, f"{base}/ledger?digests=1&start={seq}&limit=10000",
                                signer)
        if not page or not page["digests"]:
            break
        for s, d in page["digests"]:
            if s > end:
                return out
            out[int(s)] = str(d)
        seq = int(page["digests"][-1][0]) + 1
    return out


async def check_ledgers(session: aiohttp.ClientSession, net: NetworkDir, start: int,
                        end: int) -> dict[str, Any]:
    """Agreement: every seq in [start, end] that two or more nodes stored has one digest."""
    ids = net.membership.node_ids
    ledgers = await asyncio.gather(*(_digests(session, net.url(i), start, end, operator(net))
                                     for i in ids))
    by_seq: dict[int, dict[str, list[str]]] = {}
    for nid, ledger in zip(ids, ledgers, strict=True):
        for seq, digest in ledger.items():
            by_seq.setdefault(seq, {}).setdefault(digest, []).append(nid)
    violations = [{"seq": seq, "digests": {d[:16]: nodes for d, nodes in found.items()}}
                  for seq, found in sorted(by_seq.items()) if len(found) > 1]
    return {"ok": not violations, "violations": violations[:50], "checked_seqs": len(by_seq),
            "blocks_by_node": {i: len(ledger) for i, ledger in zip(ids, ledgers, strict=True)}}


async def request_seqs(session: aiohttp.ClientSession, net: NetworkDir, node: str, start: int,
                       end: int, budget_s: float = 20.0) -> dict[str, int]:
    """request key -> seq from one node's ledger (best effort within `budget_s`)."""
    out: dict[str, int] = {}
    seq = start
    deadline = time.monotonic() + budget_s
    while seq <= end and time.monotonic() < deadline:
        page = await fetch_json(session, f"{net.url(node)}/ledger?start={seq}&limit=1000",
                                operator(net))
        if not page or not page["blocks"]:
            break
        for block in page["blocks"]:
            for req in block["requests"]:
                out.setdefault(req["key"], int(block["seq"]))
        seq = int(page["blocks"][-1]["seq"]) + 1
    return out


# -- the clients ------------------------------------------------------------------------------


def _ledger_traffic(net: NetworkDir, spec: LoadSpec) -> Any:
    """On a ledger network, the simulator's ledger traffic (None: `put` ops for kv). Its
    calendar starts at the wall clock now, the calendar the replicas stamp blocks with (their
    genesis epoch is 0, node/apps.py), so lots it commissions expire in the future there."""
    if net.state_machine != "ledger":
        return None
    from medbft.traffic import LedgerTraffic
    from node.ledger.genesis import LedgerGenesis

    genesis = LedgerGenesis.from_membership(net.membership, epoch_ns=time.time_ns())
    return LedgerTraffic(genesis, random.Random(f"medbft:{spec.seed}:ledger"), flow=spec.flow,
                         mix=spec.mix, invalid=spec.invalid, event_at_ns=None,
                         duration_ns=spec.duration_ns)


def client_ids(net: NetworkDir, spec: LoadSpec) -> list[str]:
    """The client identities `spec` drives. Raises ValueError when it asks for more than the
    network has."""
    available = [c.id for c in net.membership.clients]
    wanted = spec.clients
    if wanted is None:
        wanted = len(available) if net.state_machine == "ledger" else 1
    if wanted > len(available):
        raise ValueError(f"the network has {len(available)} client identities; asked for "
                         f"{wanted} (create more with `medbft keys init --clients N`)")
    return available[:wanted]


def _make_parties(net: NetworkDir, spec: LoadSpec, loop: asyncio.AbstractEventLoop,
                  clock: RealClock, on_effect: Callable[[str, Any], None]) -> dict[str, _Party]:
    pubs = net.membership.public_keys()
    parties: dict[str, _Party] = {}
    for cid in client_ids(net, spec):
        ident = net.identity(cid)
        core = Client(net.membership, Keyring(ident, pubs), net.client_timeout_ns)
        _start_timestamps_at_clock(core, spec)
        transport: HttpTransport | MqttTransport
        if spec.transport == "http":
            transport = HttpTransport(Keyring(ident, pubs), net.membership, net.network_id,
                                      loop, dial={n: net.url(n)
                                                  for n in net.membership.node_ids},
                                      link_delay_s=net.link_delay_s,
                                      ssl_context=net.client_ssl(cid))
        else:
            broker = BrokerSettings.for_party(net, cid, spec.broker)
            transport = MqttTransport(cid, broker, str(net.settings["mqtt"]["topic_prefix"]), loop,
                                      link_delay_s=net.link_delay_s)
        runtime = NodeRuntime(core, transport, clock,  # type: ignore[arg-type]
                              on_other=functools.partial(on_effect, cid))
        transport.on_receive = runtime.receive
        parties[cid] = _Party(core, runtime, transport)
    return parties


def _start_timestamps_at_clock(core: Client, spec: LoadSpec) -> None:
    """Replicas drop a request older than the last reply to its (client, session), and a real
    client identity outlives one run of this program. So timestamps start at the wall clock
    in microseconds (the paper's clock-based timestamps, OSDI '99 §4.1) rather than at 1,
    and a later run's requests are always newer."""
    from medbft.traffic.workload import MAX_SESSIONS_PER_CLIENT

    base = time.time_ns() // 1000
    for session in range(max(MAX_SESSIONS_PER_CLIENT, spec.outstanding or 0)):
        core.timestamps[session] = base


async def _wait_connected(parties: dict[str, _Party], reachable: set[str],
                          timeout_s: float) -> bool:
    """Until every client's links to the `reachable` nodes (or to the broker) are up."""
    needed = reachable | {"broker"}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(up for p in parties.values() for peer, up in p.transport.connected().items()
               if peer in needed):
            return True
        await asyncio.sleep(0.02)
    return False


async def run_load(net: NetworkDir, spec: LoadSpec,
                   on_start: Callable[[RealClock], None] | None = None,
                   log: Callable[[str], None] = lambda line: None,
                   progress: Callable[[int, int, int, int], None] | None = None) -> LoadResult:
    """Offer `spec`'s load to the running network `net` and measure it. `on_start(clock)`
    runs when the first request is about to be submitted (the cluster schedules its faults
    on that clock). `progress(elapsed_ns, duration_ns, committed, submitted)`, if given, is
    called as the load runs (every poll, ~50 times a second: the caller throttles, see
    medbft/progress.py) and once at the end. Raises ValueError for an impossible spec."""
    from medbft.traffic.workload import Workload

    loop = asyncio.get_running_loop()
    clock = RealClock.monotonic_from_now(loop)
    box: dict[str, Workload] = {}

    def on_effect(cid: str, eff: Any) -> None:
        box["w"].on_effect(cid, eff)

    parties = _make_parties(net, spec, loop, clock, on_effect)
    workload = box["w"] = Workload(
        spec, {c: (p.client, p.runtime) for c, p in parties.items()},
        spec.duration_ns, random.Random(f"medbft:{spec.seed}:workload"),
        ops=_ledger_traffic(net, spec))
    async with api_session(net) as session:
        for party in parties.values():
            await party.transport.start()
        try:
            before = await scrape(session, net)
            if not await _wait_connected(parties, set(before), spec.connect_timeout_s):
                log("warning: not every client link is up; starting anyway")
            wall_start = time.perf_counter()
            clock.restart()
            if on_start is not None:
                on_start(clock)
            with steady_gc():  # no collector stalls inside the measured latencies
                workload.start()
                await _until_settled(workload, clock, spec, progress)
            elapsed_s = time.perf_counter() - wall_start
        finally:
            for party in parties.values():
                party.runtime.crash()
                await party.transport.close(drain_s=0.1)
        after = await scrape(session, net)
        summary = await _summarise(session, net, spec, workload, parties, before, after,
                                   clock.now_ns, elapsed_s)
    records = sorted(workload.records.values(), key=lambda r: (r.submit_ns, r.client, r.session))
    return LoadResult(summary, records, before, after)


async def _until_settled(workload: Any, clock: RealClock, spec: LoadSpec,
                         progress: Callable[[int, int, int, int], None] | None = None) -> None:
    end_ns = spec.duration_ns + spec.drain_ns
    while True:
        await asyncio.sleep(0.02)
        now = clock.now_ns
        if progress is not None:
            progress(now, spec.duration_ns, workload.settled, workload.submitted)
        if now >= spec.duration_ns and workload.settled == workload.submitted:
            return
        if now >= end_ns:
            return


# -- the summary ------------------------------------------------------------------------------


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    out = {k: v - before.get(k, 0) for k, v in after.items()}
    return {k: v for k, v in sorted(out.items()) if v}


def _traffic(parties: dict[str, _Party], before: dict[str, Any],
             after: dict[str, Any]) -> dict[str, Any]:
    """Messages sent during the run by every node (counter differences) and every client.
    `lost` counts what a sender's transport dropped (no route to the peer, or its queue full);
    what the kernel or the broker lost is invisible here, and nothing duplicates or reorders
    on purpose, so those two are None."""
    by_type: dict[str, int] = {}
    bytes_by_type: dict[str, int] = {}
    by_node: dict[str, int] = {}
    bytes_by_node: dict[str, int] = {}
    lost_by_reason = {"no-route": 0, "queue-full": 0}
    sources: list[tuple[str, dict[str, int], dict[str, int], int, int]] = []
    for nid, row in after.items():
        c, b = row["counters"], before.get(nid, {}).get("counters", {})
        sources.append((nid, _delta(c["sent_by_kind"], b.get("sent_by_kind", {})),
                        _delta(c["sent_bytes_by_kind"], b.get("sent_bytes_by_kind", {})),
                        c["dropped_no_route"] - b.get("dropped_no_route", 0),
                        c["dropped_queue_full"] - b.get("dropped_queue_full", 0)))
    for cid, party in parties.items():
        st = party.transport.stats
        sources.append((cid, dict(st.sent_by_kind), dict(st.sent_bytes_by_kind),
                        st.dropped_no_route, st.dropped_queue_full))
    for party_id, kinds, kind_bytes, no_route, queue_full in sources:
        for kind, count in kinds.items():
            by_type[kind] = by_type.get(kind, 0) + count
        for kind, nbytes in kind_bytes.items():
            bytes_by_type[kind] = bytes_by_type.get(kind, 0) + nbytes
        by_node[party_id] = sum(kinds.values())
        bytes_by_node[party_id] = sum(kind_bytes.values())
        lost_by_reason["no-route"] += no_route
        lost_by_reason["queue-full"] += queue_full
    return {"total": sum(by_type.values()), "bytes": sum(bytes_by_type.values()),
            "lost": sum(lost_by_reason.values()),
            "lost_by_reason": {k: v for k, v in lost_by_reason.items() if v},
            "duplicated": None, "reordered": None,
            "by_type": dict(sorted(by_type.items())),
            "bytes_by_type": dict(sorted(bytes_by_type.items())),
            "by_node": dict(sorted(by_node.items())),
            "bytes_by_node": dict(sorted(bytes_by_node.items()))}


def _counter_sum(before: dict[str, Any], after: dict[str, Any], name: str) -> dict[str, int]:
    total: dict[str, int] = {}
    for nid, row in after.items():
        delta = _delta(row["counters"][name], before.get(nid, {}).get("counters", {})
                       .get(name, {}))
        for k, v in delta.items():
            total[k] = total.get(k, 0) + v
    return dict(sorted(total.items()))


async def _summarise(session: aiohttp.ClientSession, net: NetworkDir, spec: LoadSpec,
                     workload: Any, parties: dict[str, _Party], before: dict[str, Any],
                     after: dict[str, Any], now_ns: int, elapsed_s: float) -> dict[str, Any]:
    """What the clients and the nodes' counters saw, handed to the one summary builder
    (medbft.summary), so a real run's summary has a simulated run's keys and meanings."""
    records = list(workload.records.values())
    start_seq = min((row["last_executed"] for row in before.values()), default=0) + 1
    end_seq = max((row["last_executed"] for row in after.values()), default=0)
    ledgers = await check_ledgers(session, net, start_seq, end_seq)
    if after:
        best = max(after, key=lambda i: after[i]["last_executed"])
        seqs = await request_seqs(session, net, best, start_seq, end_seq)
        for r in records:
            r.seq = seqs.get(r.key)
    events = _counter_sum(before, after, "events")
    last_commit = max((r.commit_ns for r in records if r.commit_ns), default=0)
    unsettled = workload.submitted - workload.settled
    ledger = await _ledger_summary(session, net, spec)
    refused = getattr(workload.ops, "refused", None)
    if ledger is not None and refused is not None:  # answered by the replicas, never ordered
        ledger["refused_at_admission"] = dict(sorted(refused.items()))
    if ledger is not None and not ledger["heads_agree"]:
        ledgers["ok"] = False  # same height, different chain heads: execution diverged
        ledgers["violations"].append({"ledger_heads": ledger["heads"]})
    summary = build_summary(Measured(
        scenario=spec.name, scenario_hash=spec.scenario_hash, version=code_version(),
        mode="real", transport=spec.transport, seed=spec.seed,
        n=net.membership.n, f=net.membership.f,
        duration_ns=spec.duration_ns, sim_time_ns=None,
        records=records, submitted=workload.submitted, settled=workload.settled,
        messages=_traffic(parties, before, after),
        views_entered=len(_views_entered(before, after)),
        final_view=max((row["view"] for row in after.values() if row["view_active"]),
                       default=0),
        stable_checkpoint=max((row["stable_checkpoint"] for row in after.values()), default=0),
        state_transfers=events.get("state-transfer", 0),
        rejected=_counter_sum(before, after, "rejected"),
        ignored=_counter_sum(before, after, "ignored"),
        cpu={"model": "real"},
        nodes={nid: {"view": row["view"], "last_executed": row["last_executed"],
                     "stable_checkpoint": row["stable_checkpoint"]}
               for nid, row in after.items()},
        safety={"ok": ledgers["ok"], "violations": ledgers["violations"],
                "checked_seqs": ledgers["checked_seqs"]},
        liveness={"ok": unsettled == 0, "submitted": workload.submitted,
                  "settled": workload.settled, "unsettled": unsettled,
                  "last_commit_s": round(last_commit / 1e9, 9)},
        ledger=ledger,
    ), spec.expect)
    summary["wall_time_s"] = round(elapsed_s, 3)
    return summary


def _views_entered(before: dict[str, Any], after: dict[str, Any]) -> set[int]:
    """The views some node entered during the run: what the nodes list in `/status`
    (`views_entered`, their most recent ones) after the run and did not before."""
    earlier = {v for row in before.values() for v in row.get("views_entered", ())}
    return {v for row in after.values() for v in row.get("views_entered", ())} - earlier


async def _ledger_summary(session: aiohttp.ClientSession, net: NetworkDir,
                          spec: LoadSpec) -> dict[str, Any] | None:
    """On a ledger network, the summary's `ledger`: the counts of the node with the longest
    chain (totals since genesis, not only this run's), and every node's height and head;
    nodes at one height must hold one head. None on a key-value network."""
    if net.state_machine != "ledger":
        return None
    ids = net.membership.node_ids
    rows = await asyncio.gather(*(fetch_json(session, f"{net.url(i)}/state", operator(net))
                                  for i in ids))
    states = {i: row["ledger"] for i, row in zip(ids, rows, strict=True)
              if row is not None and "ledger" in row}
    if not states:
        return None
    best = max(states, key=lambda i: (states[i]["blocks"], -ids.index(i)))
    heads = {i: {"blocks": st["blocks"], "head": st["head"]} for i, st in states.items()}
    by_height: dict[int, set[str]] = {}
    for st in states.values():
        by_height.setdefault(int(st["blocks"]), set()).add(str(st["head"]))
    counts = {k: v for k, v in states[best].items() if k != "head"}
    return {"flow": spec.flow, "replica": best, **counts, "heads": heads,
            "heads_agree": all(len(h) == 1 for h in by_height.values())}
