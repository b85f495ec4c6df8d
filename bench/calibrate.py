"""Measure, on this machine, the per-operation costs the simulator's CPU model charges.

Why this exists: `sim/cpu.py` charges every replica step by the operations the core counted
(`node.crypto.Costs`: messages, bytes, sign, verify, mac, digest) at a per-operation cost in
nanoseconds (`DEFAULT_COSTS_NS`, measured once on the project's reference machine). Results
only transfer to another machine if those costs do, so this script re-measures them here and
prints a `cpu:` mapping to paste into a scenario. It is a measuring tool, never used in tests.

How to run (from the project root):

    .venv/bin/python bench/calibrate.py            # full: ~20 s on a 2-core VM
    .venv/bin/python bench/calibrate.py --quick    # fewer repetitions: ~3 s
    .venv/bin/python bench/calibrate.py --json results/calibration.json

What is measured (medians over several repetitions, `time.perf_counter_ns`):

* sign    ECDSA P-256 through `Keyring.sign` (deterministic RFC 6979, r||s encoding).
* verify  ECDSA P-256 through `Keyring._verify_uncached` (the real check, no VerifyCache).
* mac     keyed BLAKE2b through `Keyring.mac` on a ~200-byte input, session key already derived.
* digest  `hashlib.sha256(data).digest()` of 200 bytes.
* message and byte: the replica core's own Python cost, crypto excluded. An in-memory
  cluster (`sim.memnet.InMemoryCluster`, n = 4, one closed-loop client) is driven through many
  requests; the wall time of every `Replica.step` call is summed (each replica's `step` is
  wrapped on the instance; the wrapper's own overhead is measured and removed), the crypto the
  replicas counted in `costs` is priced at the per-op figures above and subtracted, and what
  remains is divided by the messages handled. The cluster's shared VerifyCache is switched off
  (each keyring's `_verify_cache` set to None) so every counted verification is a real one and
  the subtraction is honest. Runs at two request sizes give two equations
  residual = message * messages + byte * bytes, solved for `message` (per message at zero
  payload) and `byte` (marginal cost per received byte: decoding, hashing, MACs and the state
  machine over larger payloads). MAC session keys and public keys are warmed up before timing.
  Requests write one of four keys, so the replicated state (and with it the cost of the
  checkpoint snapshot taken every 128 requests) stays small and constant during the run:
  state-machine cost that grows with the state is not a per-message cost.

`--real`: what a REAL node process spends, everything included
-------------------------------------------------------------

The in-memory figures above price the replica core alone. A real node also runs the event
loop, aiohttp or the MQTT client, TLS, frame encoding, SQLite commits and the kernel's socket
work, about ten times more per message on loopback (issue 17). `--real` measures that:

    .venv/bin/python bench/calibrate.py --real                    # kv, then ledger, HTTP
    .venv/bin/python bench/calibrate.py --real --app kv --transport mqtt --json PATH

It runs the scenario bench/compare.yaml (4 nodes on loopback, TLS on as shipped, 1 client x
1 request in flight, batch 1) as a real cluster (`medbft.real.cluster.run_cluster`), once
with the key-value app and, for `--app ledger`, once more with the ledger. Rather than
differencing two runs of different lengths, each run is sampled twice in its steady middle
(after `--warmup`, and `--tail` before the load stops): each node process's CPU seconds
(/proc, user + system), and from each node's /status the messages it received
(`messages_received`) and the requests it executed (`executed_requests`). Start-up,
connection set-up, the drain and the post-run ledger checks (which read every block back and
cost CPU per request) all fall outside the window, so nothing needs to cancel.

The simulator charges sign, verify, mac, digest and byte separately, so their share is taken
out first. Their counts come from a SIMULATED run of the same scenario and app (the replicas'
`node.crypto.Costs` counters, per executed request), scaled by the requests the real nodes
executed in the window; they are priced at this machine's crypto figures, measured here just
before the runs (the `byte` cost stays at DEFAULT_COSTS_NS: one byte is a fraction of a
nanosecond against ~100 us per message). Then

    message = (node CPU - priced crypto and bytes) / messages received      (kv run)
    execute = (node CPU - priced crypto and bytes - message x messages)
              / requests executed                                            (ledger run)

so the kv run sets `message` (kv execution, a dict write, is folded into it and `execute`
stays 0 for kv), and the ledger run's surplus over that, per executed transaction, is the
ledger's `execute`. The messages per executed request of both worlds are printed side by
side: when they disagree, the simulated crypto counts do not describe the real run.

Known error sources (the figures are only as good as the machine was quiet):
* the 4 nodes and the load generator share the machine's cores (2 on the reference VM), so
  cache and scheduler interference inflates CPU time under load (the queueing for those
  cores is modelled: `cores` below; the interference is not);
* framing amortises per-message cost: at 1 request in flight each frame carries one
  message, at higher load several, so the 1x1 figure is an upper bound for busy runs;
* idle work (timers, the /status scrapes of the sampling itself) is charged to messages;
* crypto is priced from a micro-benchmark in this process, not measured inside the nodes;
* the time the node threads sat runnable waiting for a core (/proc/PID/task/*/schedstat) is
  printed per message: on a busy machine it can exceed the CPU itself.

The machine (unless `--no-machine`): the block also gets `cores`, the cores this process may
run on (the nodes and the load generator shared them), and `client`, the load generator's CPU
(this process: building and signing requests, checking replies) per reply a client handled.
With them the simulator queues the replicas for the shared cores and charges the clients, the
two things a per-operation model leaves out of a loopback cluster (sim/cpu.py).

The pauses (unless `--no-pauses`): every operation priced at one cost gives a simulated p99
barely above its p50, while a real loopback run's p99 is 1.5-2 times its p50 (five processes
on two cores, the kernel, garbage collection). The model's `pause` and `pause_chance` (a
process pauses after a step with that chance, for an exponential time of that mean) are fitted
to the `--fit-app` real run's p50, p95 and p99: the scenario is simulated with the measured
block at each point of a grid (PAUSE_CHANCES x PAUSE_MEANS_MS, then the eight neighbours of the
best point at finer spacing), with the hop bench/compare.py --calibrated simulates, and the
point whose log errors squared sum least is written into the block: each app's own fit into
its block (`--fit-app each`, the default: a process's pauses include its garbage collection,
which grows with its heap, and the ledger's is larger), or one app's into every block
(`--fit-app kv`). The fits are on the real runs above; `bench/compare.py --calibrated` then
checks both apps against fresh real runs, so no check is the data a fit saw, and with one
app's fit for both the other app's rows show whether the pauses carry over.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# The in-memory calibration wraps each replica's `step` on the instance, which a compiled
# (`medbft native build`) Replica does not allow; and compiled or not, a real node spends the
# same (docs/benchmarks.md, "The native build"). So this tool, and the nodes it starts, run
# pure Python.
os.environ["MEDBFT_NATIVE"] = "0"

from node.config import Config
from node.crypto import SIGNATURE_BYTES, Keyring
from sim.cpu import DEFAULT_COSTS_NS
from sim.memnet import InMemoryCluster

KEYS = ("message", "byte", "sign", "verify", "mac", "digest")
CRYPTO = ("sign", "verify", "mac", "digest")
PAYLOAD = bytes(range(200))  # the ~200-byte input for digest and MAC

perf_ns = time.perf_counter_ns


# ---------------------------------------------------------------------------------------------
# Micro-benchmarks


def per_op_ns(fn: Any, inner: int, reps: int) -> list[float]:
    """Time `inner` back-to-back calls of `fn()` `reps` times; nanoseconds per call each time."""
    fn()  # warm up (lazy key loading, caches)
    out = []
    for _ in range(reps):
        t0 = perf_ns()
        for _ in range(inner):
            fn()
        out.append((perf_ns() - t0) / inner)
    return out


def crypto_costs(reps: int) -> dict[str, list[float]]:
    cluster = InMemoryCluster(n=4)
    a, b = cluster.replicas["r0"].keys, cluster.replicas["r1"].keys
    keys_a = Keyring(a.identity, dict(a._public_bytes))  # fresh: no verify cache, own counters
    sig = keys_a.sign(PAYLOAD)
    assert len(sig) == SIGNATURE_BYTES
    pub = keys_a._public_bytes[a.id]
    keys_b = Keyring(b.identity, dict(b._public_bytes))
    assert keys_b._verify_uncached(a.id, pub, PAYLOAD, sig)

    sha256 = hashlib.sha256
    return {
        "sign": per_op_ns(lambda: keys_a.sign(PAYLOAD), 400, reps),
        "verify": per_op_ns(lambda: keys_b._verify_uncached(a.id, pub, PAYLOAD, sig), 200, reps),
        "mac": per_op_ns(lambda: keys_a.mac(b.id, PAYLOAD), 20_000, reps),
        "digest": per_op_ns(lambda: sha256(PAYLOAD).digest(), 100_000, reps),
    }


def wrapper_overhead_ns(reps: int) -> float:
    """What wrapping a call in two perf_counter_ns reads adds (subtracted per step)."""
    spent = [0]

    def noop(event: Any, now: int) -> None:
        return None

    def wrapped(event: Any, now: int) -> None:
        t0 = perf_ns()
        r = noop(event, now)
        spent[0] += perf_ns() - t0
        return r

    samples = []
    for _ in range(reps):
        spent[0] = 0
        for _ in range(50_000):
            wrapped(None, 0)
        samples.append(spent[0] / 50_000)
    # The time inside the wrapper that is not the call itself: the clock reads' share.
    plain = per_op_ns(lambda: noop(None, 0), 50_000, reps)
    return max(0.0, statistics.median(samples) - statistics.median(plain))


# ---------------------------------------------------------------------------------------------
# Replica core handling cost


def drive_cluster(requests: int, op_size: int, warmup: int, batch_size: int) -> dict[str, Any]:
    """Run `requests` requests through an n=4 in-memory cluster; time the replicas' steps."""
    cluster = InMemoryCluster(n=4, config=Config(batch_size=batch_size))
    for rep in cluster.replicas.values():
        rep.keys._verify_cache = None  # every counted verification is a real one
    value = (b"v" * op_size)[: max(1, op_size - 12)]
    counter = 0

    def run(count: int) -> None:
        nonlocal counter
        for _ in range(count):
            counter += 1
            before = len(cluster.accepted)
            cluster.submit(b"put k%d " % (counter % 4) + value)
            cluster.deliver_all()
            if len(cluster.accepted) != before + 1:
                raise RuntimeError("request did not commit in the in-memory cluster")
            if len(cluster.sent) > 10_000:  # keep memory flat; nothing reads these here
                cluster.sent.clear()
                cluster.traces.clear()
                cluster.accepted.clear()

    run(warmup)  # derives MAC session keys, loads public keys, fills caches

    spent = [0]
    calls = [0]
    for rep in cluster.replicas.values():
        inner = rep.step

        def timed(event: Any, now_ns: int, inner: Any = inner) -> Any:
            t0 = perf_ns()
            out = inner(event, now_ns)
            spent[0] += perf_ns() - t0
            calls[0] += 1
            return out

        rep.step = timed  # type: ignore[method-assign]
    before = {rid: r.costs.snapshot() for rid, r in cluster.replicas.items()}
    gc.collect()
    run(requests)
    ops = dict.fromkeys(("messages", "bytes", *CRYPTO, "execute"), 0)  # Costs.snapshot order
    for rid, r in cluster.replicas.items():
        for name, b, a in zip(ops, before[rid], r.costs.snapshot(), strict=True):
            ops[name] += a - b
    return {"step_ns": spent[0], "steps": calls[0], "ops": ops, "requests": requests,
            "op_size": op_size}


def handling_costs(runs: list[dict[str, Any]], crypto: dict[str, float],
                   overhead_ns: float) -> dict[str, float]:
    """Residual (step time minus priced crypto minus timer overhead) for each run."""
    out = {}
    for run in runs:
        ops = run["ops"]
        crypto_ns = sum(crypto[k] * ops[k] for k in CRYPTO)
        residual = run["step_ns"] - overhead_ns * run["steps"] - crypto_ns
        out[run["op_size"]] = {
            "residual_ns": residual, "messages": ops["messages"], "bytes": ops["bytes"],
            "crypto_share": crypto_ns / run["step_ns"],
        }
    return out


def solve_message_byte(small: dict[str, float], large: dict[str, float]) -> tuple[float, float]:
    """residual = message * messages + byte * bytes, two runs -> (message, byte)."""
    m1, b1, r1 = small["messages"], small["bytes"], small["residual_ns"]
    m2, b2, r2 = large["messages"], large["bytes"], large["residual_ns"]
    det = m1 * b2 - m2 * b1
    message = (r1 * b2 - r2 * b1) / det
    byte = (m1 * r2 - m2 * r1) / det
    return message, byte


# ---------------------------------------------------------------------------------------------
# Real node costs (--real)

#: The cost keys the CPU model charges and the `Costs` counter each one multiplies.
COUNTER_OF = {"message": "messages", "byte": "bytes", "sign": "sign", "verify": "verify",
              "mac": "mac", "digest": "digest", "execute": "execute"}
#: What the model charges besides `message` and `execute`: priced, then taken out.
PRICED_APART = ("byte", "sign", "verify", "mac", "digest")
SCENARIO = Path(__file__).resolve().parent / "compare.yaml"


@dataclass
class Window:
    """What the node processes did between two samples in the steady middle of a real run."""

    seconds: float
    node_cpu_s: float
    """CPU seconds (user + system) of all node processes together."""
    messages: int
    """Messages the nodes received (their `messages_received` counters, summed)."""
    executed: int
    """Requests the nodes executed (`executed_requests`, summed over the nodes)."""
    loadgen_cpu_s: float = 0.0
    """CPU seconds of this process (the load generator) over the window: not modelled."""
    nodes: int = 4
    node_wait_s: float = 0.0
    """Seconds the node processes' threads sat runnable on a run queue, waiting for a core
    (/proc/PID/task/*/schedstat): latency the model has no term for, since it gives every
    replica a CPU of its own and nothing else runs."""
    broker_cpu_s: float = 0.0
    """CPU seconds of the cluster's own MQTT broker (mqtt transport): not modelled either."""


def window_between(a: dict[str, Any], b: dict[str, Any], nodes: int) -> Window:
    """The difference of two samples (see `_sample`) as a Window; ValueError when the window
    saw no executed request or no message (the run stalled, or the samples came too late)."""
    win = Window(seconds=b["t"] - a["t"], node_cpu_s=b["node_cpu_s"] - a["node_cpu_s"],
                 messages=b["messages"] - a["messages"], executed=b["executed"] - a["executed"],
                 loadgen_cpu_s=b["loadgen_cpu_s"] - a["loadgen_cpu_s"], nodes=nodes,
                 node_wait_s=b.get("node_wait_s", 0.0) - a.get("node_wait_s", 0.0),
                 broker_cpu_s=b.get("broker_cpu_s", 0.0) - a.get("broker_cpu_s", 0.0))
    if win.messages <= 0 or win.executed <= 0 or win.seconds <= 0:
        raise ValueError(f"the sampling window saw {win.executed} executed requests and "
                         f"{win.messages} messages in {win.seconds:.2f} s: nothing to divide by "
                         f"(did the run stall? try a longer --duration)")
    return win


def per_executed(totals: dict[str, int]) -> dict[str, float]:
    """Costs counters (summed over replicas) per executed request; ValueError if none ran."""
    executed = totals.get("execute", 0)
    if executed <= 0:
        raise ValueError("the simulated run executed no request: no counts to scale")
    return {name: count / executed for name, count in totals.items()}


def priced_apart_ns(win: Window, sim_per_exec: dict[str, float],
                    costs: dict[str, float]) -> float:
    """What the model charges for crypto and bytes over the window: each operation's count
    per executed request in the simulated twin, times the requests the real nodes executed,
    times its cost here."""
    return sum(costs[k] * sim_per_exec[COUNTER_OF[k]] * win.executed for k in PRICED_APART)


def message_cost_ns(win: Window, sim_per_exec: dict[str, float],
                    costs: dict[str, float]) -> float:
    """Node CPU per received message, after what the model charges apart (kv run)."""
    return (win.node_cpu_s * 1e9 - priced_apart_ns(win, sim_per_exec, costs)) / win.messages


def execute_cost_ns(win: Window, sim_per_exec: dict[str, float], costs: dict[str, float],
                    message_ns: float) -> float:
    """Node CPU per executed request beyond `message_ns` per message and the crypto and
    bytes priced apart (ledger run, with `message_ns` from the kv run)."""
    rest = (win.node_cpu_s * 1e9 - priced_apart_ns(win, sim_per_exec, costs)
            - message_ns * win.messages)
    return rest / win.executed


def real_costs(windows: dict[str, Window], sims: dict[str, dict[str, float]],
               crypto: dict[str, float],
               byte_ns: float = DEFAULT_COSTS_NS["byte"]) -> dict[str, dict[str, float]]:
    """Per app, the full set of per-operation costs (ns) for a scenario's `cpu:` block.
    `windows` and `sims` need "kv"; with "ledger" too, the ledger's `execute` is its CPU
    per executed request over the kv run's per-message cost."""
    if "kv" not in windows:
        raise ValueError("the per-message cost comes from a kv run: windows needs 'kv'")
    base = {"byte": byte_ns, **{k: crypto[k] for k in CRYPTO}}
    message = message_cost_ns(windows["kv"], sims["kv"], base)
    out = {"kv": {"message": message, **base, "execute": 0.0}}
    if "ledger" in windows:
        execute = execute_cost_ns(windows["ledger"], sims["ledger"], base, message)
        out["ledger"] = {"message": message, **base, "execute": execute}
    return out


def machine_terms(win: Window, cores: int) -> dict[str, float]:
    """The `cpu:` fields that describe the machine of a loopback run: the cores the nodes and
    the load generator shared, and the load generator's CPU per reply a client handled (each
    request a node executed sends one reply, so `executed`, summed over the nodes, counts the
    replies)."""
    return {"cores": cores, "client": win.loadgen_cpu_s * 1e9 / win.executed}


def sim_counts(scenario: str, app: str, duration: str) -> dict[str, int]:
    """The replicas' `Costs` counters, summed, after simulating `scenario` with `app`."""
    from medbft.scenario import load_scenario
    from sim.run import _Run  # the run object: its replicas' counters are what we need

    sc = load_scenario(scenario, [f"workload.app={app}", f"duration={duration}"])
    run = _Run(sc, sc.seed, False)
    try:
        run.run()
    finally:
        run.close()
    totals = dict.fromkeys(COUNTER_OF.values(), 0)
    for replica in run.replicas.values():
        for name, value in zip(totals, replica.costs.snapshot(), strict=True):
            totals[name] += value
    return totals


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process `pid` has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def run_queue_wait_s(pid: int) -> float:
    """Seconds the threads of process `pid` have waited on a run queue (0 without schedstat)."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended between the listing and the read
    return total / 1e9


async def _sample(cluster: Any, session: Any, net: Any) -> dict[str, Any]:
    from medbft.real.load import scrape

    cpu = cluster.cpu_seconds()
    wait = sum(run_queue_wait_s(proc.pid) for proc in cluster.procs.values())
    broker = cluster.broker_proc
    broker_cpu = process_cpu_s(broker.pid) if broker is not None and broker.poll() is None else 0.0
    loadgen = time.process_time()
    t = time.monotonic()
    rows = await scrape(session, net)
    if len(rows) != len(net.membership.node_ids) or len(cpu) != len(rows):
        raise RuntimeError(f"only {len(rows)} of {len(net.membership.node_ids)} nodes answered "
                           f"/status")
    return {"t": t, "node_cpu_s": sum(cpu.values()), "loadgen_cpu_s": loadgen,
            "node_wait_s": wait, "broker_cpu_s": broker_cpu,
            "messages": sum(r["counters"]["messages_received"] for r in rows.values()),
            "executed": sum(r["counters"]["executed_requests"] for r in rows.values())}


def real_window(scenario: str, app: str, transport: str, duration_s: float, warmup_s: float,
                tail_s: float, out: Path, emulate_ms: float = 0.0
                ) -> tuple[Window, dict[str, Any]]:
    """Run `scenario` with `app` as a real cluster for `duration_s`; sample the node
    processes after `warmup_s` and `tail_s` before the load stops. (window, run summary)"""
    from medbft.cli.cluster import spec_from_scenario
    from medbft.real.cluster import run_cluster
    from node.realtime import run as run_loop
    from node.tls import api_session

    args = argparse.Namespace(transport=transport, broker=None, out=out, sync="normal",
                              app=app)
    spec, _ = spec_from_scenario(scenario, args, [f"workload.app={app}",
                                                  f"duration={duration_s:g}s"])
    spec.link_delay_ms = emulate_ms  # every party delays what it sends (a WAN on one host)
    box: list[Any] = []
    samples: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    async def sampler(net: Any) -> None:
        import asyncio

        try:
            async with api_session(net) as session:
                await asyncio.sleep(warmup_s)
                samples.append(await _sample(box[0], session, net))
                await asyncio.sleep(duration_s - warmup_s - tail_s)
                samples.append(await _sample(box[0], session, net))
        except Exception as exc:  # run_cluster swallows a during_load failure: keep it
            errors.append(exc)

    result = run_loop(run_cluster(spec, cluster_box=box, during_load=sampler))
    if errors:
        raise RuntimeError(f"sampling the nodes failed: {errors[0]!r}")
    if len(samples) != 2:
        raise RuntimeError("the load ended before both samples were taken (the cluster run "
                           "was shorter than --warmup + --tail?)")
    return window_between(samples[0], samples[1], len(spec.nodes)), result.summary


# ---------------------------------------------------------------------------------------------
# Pauses: the spread a per-operation model cannot derive, fitted to a real run's percentiles

#: The coarse grid of the fit: the chance that a step pauses, and a pause's mean length (ms).
PAUSE_CHANCES = (0.01, 0.03, 0.1, 0.3)
PAUSE_MEANS_MS = (0.1, 0.2, 0.4, 0.8, 1.6)
#: The percentiles the fit matches (each as the log of simulated / real, squared and summed).
FITTED = ("p50", "p95", "p99")


@dataclass
class PauseFit:
    """The pauses whose simulated percentiles came closest to the real run's."""

    chance: float
    mean_ns: float
    error: float
    """Sum over FITTED of log(simulated / real) squared."""
    simulated_ms: dict[str, float]
    real_ms: dict[str, float]
    tried: list[tuple[float, float, float]]
    """(chance, mean in ms, error) of every simulation, in the order run."""


def pause_error(sim_ms: dict[str, float | None], real_ms: dict[str, float]) -> float:
    """How far a simulated latency distribution lies from the real one: the sum over FITTED of
    log(simulated / real) squared (infinite when the simulation settled nothing)."""
    import math

    total = 0.0
    for q in FITTED:
        s = sim_ms.get(q)
        if not s:
            return math.inf
        total += math.log(s / real_ms[q]) ** 2
    return total


def fit_pauses(simulate: Any, real_ms: dict[str, float],
               chances: tuple[float, ...] = PAUSE_CHANCES,
               means_ms: tuple[float, ...] = PAUSE_MEANS_MS, refine: float = 1.5,
               log: Any = None) -> PauseFit:
    """Search the pause terms whose simulation `simulate(chance, mean_ms) -> latency_ms`
    matches `real_ms` best (`pause_error`): a coarse grid, then the eight neighbours of the
    best point at `refine` times closer spacing (chances capped below 1). Every simulation is
    deterministic (one seed), so the search is too."""
    tried: dict[tuple[float, float], tuple[float, dict[str, float]]] = {}

    def evaluate(chance: float, mean_ms: float) -> None:
        key = (round(chance, 6), round(mean_ms, 6))
        if key in tried:
            return
        sim = simulate(*key)
        tried[key] = (pause_error(sim, real_ms), sim)
        if log is not None:
            log(f"    chance {key[0]:<8g} mean {key[1]:<7g} ms: p50 {sim['p50'] or 0:.2f}, "
                f"p95 {sim['p95'] or 0:.2f}, p99 {sim['p99'] or 0:.2f} ms, "
                f"error {tried[key][0]:.4f}")

    for chance in chances:
        for mean_ms in means_ms:
            evaluate(chance, mean_ms)
    best = min(tried, key=lambda k: tried[k][0])
    for dc in (1 / refine, 1.0, refine):
        for dm in (1 / refine, 1.0, refine):
            evaluate(min(best[0] * dc, 0.95), best[1] * dm)
    best = min(tried, key=lambda k: tried[k][0])
    error, sim = tried[best]
    return PauseFit(best[0], best[1] * 1e6, error, {q: sim[q] for q in FITTED},
                    {q: real_ms[q] for q in FITTED},
                    [(c, m, e) for (c, m), (e, _) in tried.items()])


def _compare() -> Any:
    """bench/compare.py, the other half of the calibration (its link measurement and its
    simulated rows)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import compare

    return compare


def simulate_pauses(scenario: str, app: str, block: dict[str, Any], hop_ms: float,
                    duration: str) -> Any:
    """A `simulate` for `fit_pauses`: `scenario` with `app`, the cpu `block` plus the pauses
    tried, and `hop_ms` per network hop, for `duration` of simulated time (the row
    bench/compare.py simulates)."""
    compare = _compare()

    def simulate(chance: float, mean_ms: float) -> dict[str, Any]:
        cpu = {**block, "pause": f"{mean_ms:g}ms", "pause_chance": chance}
        latency: dict[str, Any] = compare.simulated(
            scenario, compare.sim_overrides(hop_ms, app, cpu, duration))["latency_ms"]
        return latency

    return simulate


def cpu_block(costs: dict[str, float]) -> dict[str, str | int | float]:
    """The `cpu:` mapping a scenario takes, in the model's key order: durations as text,
    `cores` (when measured) as a count, `pause_chance` (when fitted) as a number."""
    out: dict[str, str | int | float] = {k: fmt_cost(costs[k]) for k in DEFAULT_COSTS_NS}
    if "cores" in costs:
        out["cores"] = int(costs["cores"])
    if "client" in costs:
        out["client"] = fmt_cost(costs["client"])
    if "pause" in costs:
        out["pause"] = fmt_cost(costs["pause"])
        out["pause_chance"] = round(costs["pause_chance"], 6)
    return out


def cpu_block_text(costs: dict[str, float]) -> str:
    """The `cpu:` mapping as YAML text, in the model's key order."""
    return "cpu:\n" + "".join(f"  {k}: {v}\n" for k, v in cpu_block(costs).items())


def pause_fit(args: argparse.Namespace, scenario: str, apps: list[str],
              costs: dict[str, dict[str, float]],
              summaries: dict[str, dict[str, Any]]) -> dict[str, PauseFit]:
    """Fit the pauses and add them to the apps' costs: with `--fit-app each`, every app's to
    its own real run (a process's pauses include its garbage collection, which grows with its
    heap); with one app named, that app's, given to every app (one machine: the same pauses
    whatever the app, and the other app's comparison shows whether they carry over).
    Returns the fits by the app whose run each was fitted to; none, with the reason printed,
    when the simulated hop is unknown (MQTT without --link-ms)."""
    if args.link_ms is not None:
        transit = args.link_ms
    elif args.transport == "http":  # the hop compare.py --calibrated simulates
        transit = _compare().link_latency()["transit_ms"]
    else:
        print("pauses not fitted: over MQTT the simulated hop (through the broker) is not "
              "measured here; give it with --link-ms")
        return {}
    hop = args.emulate_ms + transit
    fitted = apps if args.fit_app == "each" else [
        args.fit_app if args.fit_app in apps else apps[0]]
    fits: dict[str, PauseFit] = {}
    for app in fitted:
        real_ms = {q: summaries[app]["latency_ms"][q] for q in FITTED}
        if not all(real_ms.values()):
            print(f"pauses not fitted: the real {app} run has no latency percentiles")
            return {}
        print(f"fitting pauses to the real {app} run (p50 {real_ms['p50']:.2f}, p95 "
              f"{real_ms['p95']:.2f}, p99 {real_ms['p99']:.2f} ms): simulated hop "
              f"{hop:.3f} ms, {args.fit_duration} simulated per point", flush=True)
        simulate = simulate_pauses(scenario, app, cpu_block(costs[app]), hop,
                                   args.fit_duration)
        fit = fits[app] = fit_pauses(simulate, real_ms, log=lambda line: print(line, flush=True))
        print(f"  best: pause_chance {fit.chance:g}, pause {fmt_cost(fit.mean_ns)}: simulated "
              + ", ".join(f"{q} {fit.simulated_ms[q]:.2f}" for q in FITTED)
              + " ms against real " + ", ".join(f"{q} {fit.real_ms[q]:.2f}" for q in FITTED)
              + " ms (fitted on this run: bench/compare.py checks on fresh real runs)")
    for app, app_costs in costs.items():
        fit = fits.get(app) or fits[fitted[0]]
        app_costs["pause"] = fit.mean_ns
        app_costs["pause_chance"] = fit.chance
    return fits


def main_real(args: argparse.Namespace) -> int:
    """`--real`: measure the real nodes' costs and print (and write) the `cpu:` blocks."""
    import tempfile

    from medbft.units import parse_duration_ns

    try:
        duration_s = parse_duration_ns(args.duration) / 1e9
        warmup_s = parse_duration_ns(args.warmup) / 1e9
        tail_s = parse_duration_ns(args.tail) / 1e9
    except ValueError as exc:
        raise SystemExit(f"calibrate.py: {exc}") from None
    if duration_s - warmup_s - tail_s < 0.5:
        raise SystemExit(f"calibrate.py: --duration {args.duration} leaves under 0.5 s between "
                         f"--warmup {args.warmup} and --tail {args.tail}")
    scenario = str(args.scenario)
    if not Path(scenario).is_file():
        raise SystemExit(f"calibrate.py: no scenario file {scenario}")
    apps = ["kv"] if args.app == "kv" else ["kv", "ledger"]
    from medbft.scenario import ScenarioError, load_scenario

    try:  # both twins run this scenario with these settings: check it before anything runs
        for app in apps:
            load_scenario(scenario, [f"workload.app={app}", f"duration={args.sim_duration}"])
    except ScenarioError as exc:
        raise SystemExit(f"calibrate.py: the scenario does not validate:\n{exc}") from None
    print(f"calibrating REAL nodes on {platform.machine()} / Python "
          f"{platform.python_version()}: {scenario}, apps {' and '.join(apps)}, "
          f"{args.transport}, TLS on"
          f"{f', links emulated at {args.emulate_ms:g} ms' if args.emulate_ms else ''}; "
          f"load average {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} CPUs (other work skews the figures)")
    t_start = time.perf_counter()
    samples = crypto_costs(args.reps or 3)
    crypto = {k: statistics.median(v) for k, v in samples.items()}
    print("crypto here: " + ", ".join(f"{k} {fmt_cost(v)}" for k, v in crypto.items()))
    sims, windows, summaries = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="medbft-calibrate-") as tmp:
        for app in apps:
            counts = sim_counts(scenario, app, args.sim_duration)
            sims[app] = per_executed(counts)
            try:
                win, summary = real_window(scenario, app, args.transport, duration_s,
                                           warmup_s, tail_s, Path(tmp) / app,
                                           args.emulate_ms)
            except (RuntimeError, ValueError) as exc:  # a cluster that did not come up
                raise SystemExit(f"calibrate.py: the real {app} run failed: {exc}") from None
            windows[app], summaries[app] = win, summary
            ok = summary["safety"]["ok"] and summary["safety"]["state_agreement"]["ok"]
            print(f"  {app}: real run {summary['requests']['committed']} committed, p50 "
                  f"{summary['latency_ms']['p50'] or 0:.2f} ms, safety "
                  f"{'ok' if ok else 'VIOLATED'}; window {win.seconds:.2f} s: "
                  f"{win.executed / win.nodes:.0f} requests, {win.messages} messages, node CPU "
                  f"{win.node_cpu_s:.2f} s", flush=True)
    try:
        costs = real_costs(windows, sims, crypto)
    except (ValueError, ZeroDivisionError) as exc:
        raise SystemExit(f"calibrate.py: {exc}") from None
    if not args.no_machine:  # the cores everything shared, and the load generator's CPU
        cores = len(os.sched_getaffinity(0))
        for app, win in windows.items():
            costs[app].update(machine_terms(win, cores))

    fits = {} if args.no_pauses else pause_fit(args, scenario, apps, costs, summaries)

    print()
    print(f"{'app':<8}{'msgs/exec real':>16}{'msgs/exec sim':>15}{'node CPU/req':>14}"
          f"{'priced apart/req':>18}{'load gen CPU/req':>18}{'run-queue wait/msg':>20}")
    for app, win in windows.items():
        reqs = win.executed / win.nodes
        apart = priced_apart_ns(win, sims[app], costs[app]) / reqs
        print(f"{app:<8}{win.messages / win.executed:>16.2f}{sims[app]['messages']:>15.2f}"
              f"{fmt_cost(win.node_cpu_s * 1e9 / reqs):>14}{fmt_cost(apart):>18}"
              f"{fmt_cost(win.loadgen_cpu_s * 1e9 / reqs):>18}"
              f"{fmt_cost(win.node_wait_s * 1e9 / win.messages):>20}")
    print("(per request = per request the cluster committed. The model charges the load "
          "generator's CPU as `client` and the wait for a core through `cores`, unless "
          "--no-machine)")
    for app, win in windows.items():
        if win.broker_cpu_s:
            print(f"{app}: the MQTT broker spent {fmt_cost(win.broker_cpu_s * 1e9 / win.messages)}"
                  f" of CPU per message the nodes received (not in `message`: the simulated "
                  f"link has to carry it)")
    print()
    print(f"message {fmt_cost(costs['kv']['message'])} per message (in-memory default "
          f"{fmt_cost(DEFAULT_COSTS_NS['message'])})"
          + (f"; ledger execute {fmt_cost(costs['ledger']['execute'])} per executed request"
             if "ledger" in costs else ""))
    for app in apps:
        print()
        print(f"# paste into a scenario ({app} app, {args.transport}):")
        print(cpu_block_text(costs[app]), end="")
    print()
    print(f"done in {time.perf_counter() - t_start:.1f} s wall")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "mode": "real", "machine": platform.machine(), "python": platform.python_version(),
            "scenario": scenario, "transport": args.transport, "duration_s": duration_s,
            "emulate_ms": args.emulate_ms,
            "warmup_s": warmup_s, "tail_s": tail_s, "load_average": os.getloadavg(),
            "crypto_ns": crypto, "crypto_samples_ns": samples,
            "windows": {a: asdict(w) for a, w in windows.items()},
            "sim_per_executed": sims, "costs_ns": costs,
            "cpu_yaml_by_app": {a: cpu_block(c) for a, c in costs.items()},
            "cpu_yaml": cpu_block(costs[apps[-1]]),
            "pause_fits": {a: asdict(f) for a, f in fits.items()},
            "real_summary": {a: {"committed": s["requests"]["committed"],
                                 "latency_ms": s["latency_ms"],
                                 "messages": s["messages"]["total"]}
                             for a, s in summaries.items()},
        }, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


# ---------------------------------------------------------------------------------------------
# Output


def fmt_cost(ns: float) -> str:
    """A duration string the scenario parser accepts: 17.5us, 320ns, 0.52ns (never negative)."""
    ns = max(0.0, ns)

    def num(x: float, places: int) -> str:
        text = f"{x:.{places}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text

    if ns >= 1000:
        return num(ns / 1000, 2) + "us"
    if ns >= 10:
        return num(ns, 0) + "ns"
    return num(ns, 3) + "ns"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and requests")
    ap.add_argument("--reps", type=int, help="repetitions (default 7, quick 3)")
    ap.add_argument("--requests", type=int, help="requests per cluster run (default 1500, "
                    "quick 300)")
    ap.add_argument("--large-op", type=int, default=16_384,
                    help="request size in bytes of the second run, for the per-byte slope")
    ap.add_argument("--batch-size", type=int, default=1, help="protocol batch_size (default 1)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    real = ap.add_argument_group("--real: a real node's costs, everything included")
    real.add_argument("--real", action="store_true",
                      help="measure real node processes on loopback (see the docstring)")
    real.add_argument("--app", choices=("kv", "ledger"), default="ledger",
                      help="kv: the per-message cost only; ledger (default): also the ledger's "
                           "per-request execute cost (runs kv, then ledger)")
    real.add_argument("--transport", choices=("http", "mqtt"), default="http")
    real.add_argument("--scenario", default=str(SCENARIO),
                      help="the scenario to run (default bench/compare.yaml: 1 client x 1)")
    real.add_argument("--duration", default="6s", help="each real run's load (default 6s)")
    real.add_argument("--warmup", default="1.5s", help="load before the first sample")
    real.add_argument("--tail", default="0.5s", help="load left after the second sample")
    real.add_argument("--emulate-ms", type=float, default=0.0,
                      help="every party delays what it sends by this much (a WAN on one "
                           "machine, as compare.py's WAN rows): a node's CPU per message is "
                           "not the same when it idles between messages (default 0: loopback)")
    real.add_argument("--no-machine", action="store_true",
                      help="leave out `cores` and `client` (the machine the cluster shared "
                           "and the load generator's CPU): costs per operation only")
    real.add_argument("--no-pauses", action="store_true",
                      help="do not fit the pauses (`pause`, `pause_chance`: the spread of a "
                           "shared machine) to the real run's latency percentiles")
    real.add_argument("--fit-app", choices=("kv", "ledger", "each"), default="each",
                      help="each (the default): every app's pauses fitted to its own run; or "
                           "the app whose run's pauses every app gets (the other app's "
                           "comparison then shows whether they carry over); bench/compare.py "
                           "checks on fresh runs either way")
    real.add_argument("--fit-duration", default="10s",
                      help="simulated time of each run of the pause fit (default 10s)")
    real.add_argument("--link-ms", type=float,
                      help="the simulated hop of the pause fit, in ms (default: measured, as "
                           "bench/compare.py --calibrated does; needed over MQTT)")
    real.add_argument("--sim-duration", default="1s",
                      help="simulated time of the twin run that counts the crypto (default 1s)")
    args = ap.parse_args(argv)
    if args.real:
        return main_real(args)
    reps = args.reps or (3 if args.quick else 7)
    requests = args.requests or (300 if args.quick else 1500)
    small_op = 64

    print(f"calibrating on {platform.machine()} / Python {platform.python_version()} "
          f"({platform.python_implementation()}), {reps} repetitions; load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (other work skews the figures)")
    t_start = time.perf_counter()
    samples = crypto_costs(max(reps, 5))
    crypto = {k: statistics.median(v) for k, v in samples.items()}
    overhead = wrapper_overhead_ns(reps)

    # Interleave the two request sizes so slow drift on a shared machine hits both alike; per
    # size take the median residual per request (messages and bytes per request are fixed by
    # the protocol), then solve residual = message * messages + byte * bytes once.
    runs: dict[int, list[dict[str, float]]] = {small_op: [], args.large_op: []}
    for _ in range(reps):
        for size in runs:
            run = drive_cluster(requests, size, warmup=20, batch_size=args.batch_size)
            runs[size].append(handling_costs([run], crypto, overhead)[size])

    def per_request(size: int) -> dict[str, float]:
        rs = runs[size]
        return {"residual_ns": statistics.median(r["residual_ns"] for r in rs) / requests,
                "messages": rs[0]["messages"] / requests, "bytes": rs[0]["bytes"] / requests,
                "crypto_share": statistics.median(r["crypto_share"] for r in rs)}

    small, large = per_request(small_op), per_request(args.large_op)
    message, byte = solve_message_byte(small, large)
    # Spread: the same solve on each repetition's pair.
    pairs = [solve_message_byte(a, b)
             for a, b in zip(runs[small_op], runs[args.large_op], strict=True)]
    measured = {"message": message, "byte": byte, **crypto}
    spread = {k: (min(v), max(v)) for k, v in samples.items()}
    spread["message"] = (min(p[0] for p in pairs), max(p[0] for p in pairs))
    spread["byte"] = (min(p[1] for p in pairs), max(p[1] for p in pairs))

    print()
    print(f"{'operation':<10}{'measured':>13}{'min..max':>24}{'default':>13}{'measured/default':>18}")
    for k in KEYS:
        lo, hi = spread[k]
        ratio = measured[k] / DEFAULT_COSTS_NS[k] if DEFAULT_COSTS_NS[k] else float("nan")
        print(f"{k:<10}{measured[k]:>10.1f} ns{f'{lo:.1f}..{hi:.1f}':>24}"
              f"{DEFAULT_COSTS_NS[k]:>10.1f} ns{ratio:>17.2f}x")
    print()
    print(f"cluster runs: n=4, one closed-loop client, batch_size {args.batch_size}, "
          f"{requests} requests x {reps} repetitions at {small_op} B and {args.large_op} B "
          f"per request")
    for size, pr in ((small_op, small), (args.large_op, large)):
        print(f"  {size:>6} B: {pr['messages']:.1f} messages and {pr['bytes']:.0f} bytes "
              f"received per request (all replicas); non-crypto time "
              f"{pr['residual_ns'] / pr['messages']:.0f} ns per message; crypto "
              f"{pr['crypto_share']:.0%} of step time")
    print(f"  timer wrapper overhead removed: {overhead:.0f} ns per step")
    print()
    print("# paste into a scenario:")
    print("cpu:")
    for k in KEYS:
        print(f"  {k}: {fmt_cost(measured[k])}")
    print()
    print(f"done in {time.perf_counter() - t_start:.1f} s wall")

    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "machine": platform.machine(), "python": platform.python_version(),
            "repetitions": reps, "requests": requests, "batch_size": args.batch_size,
            "measured_ns": measured, "default_ns": DEFAULT_COSTS_NS,
            "min_max_ns": spread, "crypto_samples_ns": samples,
            "wrapper_overhead_ns": overhead,
            "per_request": {str(small_op): small, str(args.large_op): large},
            "cpu_yaml": {k: fmt_cost(measured[k]) for k in KEYS},
        }, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
