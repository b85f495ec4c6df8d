"""One scenario, simulated and real: do the median latencies agree (issue #6: within 25 %)?

Why this exists: the simulator is only as credible as its agreement with reality. The
simulator charges two things a real request pays: CPU per operation (the scenario's `cpu:`
block, measured by `bench/calibrate.py`) and per-hop network delay (`network.latency`).
Both are measured here independently of PBFT, then the same scenario runs twice:

1. **link**: the one-way latency of one framed WebSocket message between two processes on
   loopback (median of a ping-pong over a persistent connection, halved; over MQTT, a
   publish to a subscriber through the broker and back). That is what a hop costs in real
   mode besides the replica core's own processing, which the CPU model charges.
2. **simulated**: `medbft run SCENARIO --set network.latency=<link one-way>` with the
   scenario's calibrated `cpu:` block.
3. **real**: `medbft cluster --scenario SCENARIO` (4 processes on loopback).

Then again with a WAN-like link: every party delays each frame it sends by `--wan-ms`
(network.json `emulation`, the same as `medbft cluster --emulate-latency`; the kernel's netem
is not available on this machine), and the simulated link latency is that delay plus the
measured loopback one-way latency.

    .venv/bin/python bench/compare.py                       # bench/compare.yaml, HTTP
    .venv/bin/python bench/compare.py --transport mqtt --broker mqtt://127.0.0.1:18840

With a calibration of the REAL nodes (issue 17: within 10% on p50 and 20% on p99, on bare
loopback and with emulated links, for the kv and the ledger app):

    .venv/bin/python bench/calibrate.py --real --json results/calibration-real.json
    .venv/bin/python bench/calibrate.py --real --emulate-ms 5 --json results/calibration-wan.json
    .venv/bin/python bench/compare.py --calibrated results/calibration-real.json \
        --calibrated-wan results/calibration-wan.json

A node's CPU per message depends on the regime: on bare loopback messages come back to back,
with 5 ms links a node idles between them and spends about twice as much per message (timers,
wake-ups, colder caches), so the WAN rows take their own calibration when one is given.

`--calibrated PATH` replaces the scenario's `cpu:` block with the one in PATH: the JSON that
`bench/calibrate.py --json` writes (`--real`: one block per app, `cpu_yaml_by_app`; the
in-memory mode: one block, `cpu_yaml`), or a YAML or JSON file with a top-level `cpu:`
mapping (one block for every app). A real calibration's block also says what machine the
cluster ran on (`cores`, shared by the nodes and the load generator, and `client`, the load
generator's CPU per reply); `--no-machine` leaves those out, to see what they change. A real
calibration's `message` cost already holds the CPU
a node spends sending and receiving a frame, so the simulated link then carries only half of
what is left of the ping-pong's mean round trip once both ends' CPU per round trip (echo
server and client, from /proc) is taken out: the time on the wire, the wake-ups and the
waiting for a core. Without `--calibrated` the link is the whole measured one-way latency
(median), as before. Over MQTT neither the calibration nor this WebSocket ping-pong sees the
broker: give its hop with `--link-ms`.

Each app is run in turn (`--app kv|ledger|both`, default both); the table prints simulated
and real p50 and p99, real/simulated, and whether each is within the bound (p50 10%,
p99 20%).

It is a measuring tool, never run by the tests; the README records its figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from medbft.real.cluster import free_ports
from node.realtime import run

ECHO_SERVER = textwrap.dedent("""
    import sys
    from aiohttp import web
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass

    async def echo(request):
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_bytes(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", echo)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
""")


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process `pid` has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _ping_pong_ws(port: int, count: int, size: int,
                        server_pid: int | None = None) -> tuple[list[float], float]:
    """Round-trip times (ms) of `count` echoes, and the CPU seconds both ends spent on the
    timed part (this process's plus the echo server's, when `server_pid` is given)."""
    payload = b"x" * size
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            try:
                ws = await session.ws_connect(f"http://127.0.0.1:{port}/ws", compress=0)
                break
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
        else:
            raise RuntimeError("echo server did not start")
        rtts = []
        cpu0 = time.process_time() + (process_cpu_s(server_pid) if server_pid else 0.0)
        for _ in range(count):
            t0 = time.perf_counter_ns()
            await ws.send_bytes(payload)
            await ws.receive()
            rtts.append((time.perf_counter_ns() - t0) / 1e6)
        cpu = time.process_time() + (process_cpu_s(server_pid) if server_pid else 0.0) - cpu0
        await ws.close()
    return rtts, cpu


def link_latency(count: int = 2000, size: int = 300) -> dict[str, float]:
    """A framed WebSocket message between two processes on loopback: `one_way_ms` (median
    round trip, halved), `cpu_per_round_trip_ms` (both ends' CPU over the timed echoes, per
    echo) and `transit_ms`, half of what is left of the mean round trip once that CPU is
    taken out (at least 0): what a hop costs beyond the CPU a real calibration charges per
    message (wire, wake-ups, waiting for a core)."""
    port = free_ports(1)[0]
    server = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(port)])
    try:
        rtts, cpu_s = run(_ping_pong_ws(port, count, size, server.pid))
    finally:
        server.terminate()
        server.wait()
    one_way = statistics.median(rtts[count // 10:]) / 2
    cpu_rt = 1000 * cpu_s / count
    # The CPU is a total over every echo, so it comes off the mean round trip, not the median.
    return {"one_way_ms": one_way, "cpu_per_round_trip_ms": cpu_rt,
            "mean_round_trip_ms": statistics.fmean(rtts),
            "transit_ms": max(0.0, (statistics.fmean(rtts) - cpu_rt) / 2)}


def link_one_way_ms(count: int = 2000, size: int = 300) -> float:
    """Median one-way latency (ms) of a framed WebSocket message between two processes."""
    return link_latency(count, size)["one_way_ms"]


#: The issue's bounds on real / simulated: p50 within 10%, p99 within 20%.
BOUNDS = {"p50": 0.10, "p99": 0.20}
APPS = ("kv", "ledger")


class CalibrationError(ValueError):
    """A --calibrated file that holds no usable `cpu:` block."""


#: The `cpu:` fields that describe the machine rather than an operation (sim/cpu.py).
MACHINE = ("cores", "client")
#: The `cpu:` fields of the pauses (sim/cpu.py), fitted by `bench/calibrate.py --real`.
PAUSES = ("pause", "pause_chance")


def cpu_blocks(data: object, source: str = "<calibration>") -> dict[str, dict[str, Any]]:
    """The `cpu:` block for each app from a parsed calibration file: `bench/calibrate.py
    --json` output (`cpu_yaml_by_app` from --real, else `cpu_yaml`) or a mapping with a
    top-level `cpu:` (one block for every app). Raises CalibrationError."""
    if not isinstance(data, dict):
        raise CalibrationError(f"{source}: expected a mapping, got {type(data).__name__}")
    by_app = data.get("cpu_yaml_by_app")
    if isinstance(by_app, dict) and by_app:
        blocks = {app: by_app.get(app) for app in APPS}
        if blocks["kv"] is None:
            raise CalibrationError(f"{source}: cpu_yaml_by_app has no 'kv' block")
        if blocks["ledger"] is None:  # a kv-only real calibration: no execute cost measured
            blocks["ledger"] = blocks["kv"]
    else:
        one = data.get("cpu_yaml", data.get("cpu"))
        if one is None:
            raise CalibrationError(f"{source}: no cpu block (expected cpu_yaml_by_app or "
                                   f"cpu_yaml from bench/calibrate.py --json, or a top-level "
                                   f"cpu: mapping)")
        blocks = dict.fromkeys(APPS, one)
    for app, block in blocks.items():
        if not isinstance(block, dict) or not block:
            raise CalibrationError(f"{source}: the {app} cpu block is not a mapping of "
                                   f"per-operation costs: {block!r}")
    # Durations as text; `cores` stays a count and `pause_chance` a number. One block for
    # both apps stays one object (main() notes that the ledger's then shares the kv block's
    # execute cost).
    kv = {str(k): _as_given(v) for k, v in blocks["kv"].items()}
    if blocks["ledger"] is blocks["kv"]:
        return {"kv": kv, "ledger": kv}
    return {"kv": kv, "ledger": {str(k): _as_given(v) for k, v in blocks["ledger"].items()}}


def _as_given(value: object) -> object:
    """A cpu block's value for a `--set`: numbers as numbers, anything else as text."""
    return value if type(value) in (int, float) else str(value)


def without(blocks: dict[str, dict[str, Any]],
            fields: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """`blocks` without `fields` (`--no-machine`: MACHINE, per-operation costs only;
    `--no-pauses`: PAUSES)."""
    kv = {k: v for k, v in blocks["kv"].items() if k not in fields}
    if blocks["ledger"] is blocks["kv"]:
        return {"kv": kv, "ledger": kv}
    return {"kv": kv, "ledger": {k: v for k, v in blocks["ledger"].items() if k not in fields}}


def load_calibration(path: str) -> dict[str, dict[str, Any]]:
    """`cpu_blocks` of the JSON or YAML file at `path`; CalibrationError when unreadable."""
    import yaml

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CalibrationError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CalibrationError(f"{path}: neither JSON nor YAML ({exc})") from None
    return cpu_blocks(data, path)


def sim_overrides(latency_ms: float, app: str, cpu: dict[str, str] | None,
                  duration: str | None) -> list[str]:
    """The `--set` overrides that turn the comparison scenario into one simulated row."""
    out = [f"network.latency={latency_ms:.4f}ms", f"workload.app={app}"]
    if cpu is not None:
        out.append("cpu=" + json.dumps(cpu))
    if duration:
        out.append(f"duration={duration}")
    return out


def within(sim: float | None, real: float | None, bound: float) -> tuple[float | None, bool]:
    """(real / simulated, whether it lies within 1 +- bound); (None, False) when either
    side has no figure."""
    if not sim or real is None:
        return None, False
    ratio = real / sim
    return ratio, abs(ratio - 1) <= bound + 1e-12


def simulated(scenario: str, overrides: list[str]) -> dict[str, Any]:
    from medbft.scenario import load_scenario
    from sim.run import run_scenario

    sc = load_scenario(scenario, overrides=overrides)
    return run_scenario(sc).summary


def real(scenario: str, transport: str, broker: str | None, emulate_ms: float,
         overrides: list[str]) -> dict[str, Any]:
    from medbft.cli.cluster import spec_from_scenario

    with tempfile.TemporaryDirectory(prefix="medbft-compare-") as tmp:
        args = argparse.Namespace(transport=transport, broker=broker, out=Path(tmp),
                                  sync="normal")
        spec, _ = spec_from_scenario(scenario, args, overrides)
        spec.link_delay_ms = emulate_ms
        if broker:
            spec.broker = broker
            # An mqtt:// broker is an anonymous plaintext one: the network must be plaintext.
            spec.insecure_plaintext = broker.startswith("mqtt://")
        from medbft.real.cluster import run_cluster

        return run(run_cluster(spec)).summary


def row_text(label: str, app: str, sim: dict[str, Any], rl: dict[str, Any]) -> str:
    """One printed row: simulated and real p50/p99, the ratios and the bounds."""
    cells = [f"{label:<12}{app:<8}"]
    marks = []
    for q in ("p50", "p99"):
        s, r = sim["latency_ms"][q], rl["latency_ms"][q]
        ratio, ok = within(s, r, BOUNDS[q])
        cells.append(f"{s or 0:>9.2f}{r or 0:>9.2f}"
                     f"{(f'{ratio:.2f}' if ratio is not None else '-'):>7}")
        marks.append(f"{q} {'met' if ok else 'NOT met'}")
    cells.append(f"{sim['requests']['committed']:>7}{rl['requests']['committed']:>7}  ")
    return "".join(cells) + ", ".join(marks)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scenario", nargs="?", default=str(Path(__file__).parent / "compare.yaml"))
    p.add_argument("--transport", choices=("http", "mqtt"), default="http")
    p.add_argument("--broker", help="MQTT broker URL (mqtt transport)")
    p.add_argument("--wan-ms", type=float, default=5.0, help="emulated link delay of the "
                   "second comparison (default 5 ms)")
    p.add_argument("--link-ms", type=float, help="skip the link measurement; use this one-way "
                                                 "latency (e.g. measured over MQTT) as the "
                                                 "simulated hop")
    p.add_argument("--calibrated", metavar="PATH",
                   help="use the cpu: block(s) in PATH (bench/calibrate.py --json output, or "
                        "a file with a top-level cpu: mapping) instead of the scenario's")
    p.add_argument("--calibrated-wan", metavar="PATH",
                   help="cpu: block(s) for the emulated-WAN rows, from `bench/calibrate.py "
                        "--real --emulate-ms MS` (default: --calibrated's): a node that idles "
                        "between messages spends more CPU per message")
    p.add_argument("--no-machine", action="store_true",
                   help="drop `cores` and `client` from the calibrated blocks: every replica "
                        "on a core of its own and clients free, as before they were modelled")
    p.add_argument("--no-pauses", action="store_true",
                   help="drop `pause` and `pause_chance` from the calibrated blocks: every "
                        "operation costs the same each time, to see what the pauses change")
    p.add_argument("--app", choices=("kv", "ledger", "both"), default="both")
    p.add_argument("--duration", help="override the scenario's duration (e.g. 3s), both sides")
    args = p.parse_args(argv)
    if not Path(args.scenario).is_file():
        p.error(f"no scenario file {args.scenario}")
    blocks: dict[str, dict[str, Any]] | None = None
    wan_blocks: dict[str, dict[str, Any]] | None = None
    if args.calibrated_wan and not args.calibrated:
        p.error("--calibrated-wan needs --calibrated (the loopback rows' blocks)")
    if args.calibrated:
        try:
            blocks = load_calibration(args.calibrated)
            wan_blocks = (load_calibration(args.calibrated_wan) if args.calibrated_wan
                          else blocks)
        except CalibrationError as exc:
            p.error(str(exc))
        dropped = (MACHINE if args.no_machine else ()) + (PAUSES if args.no_pauses else ())
        if dropped:
            blocks, wan_blocks = without(blocks, dropped), without(wan_blocks, dropped)
    apps = list(APPS) if args.app == "both" else [args.app]
    from medbft.scenario import ScenarioError, load_scenario

    try:  # check every override (the cpu blocks above all) before anything runs
        for app in apps:
            for check in (blocks, wan_blocks):
                load_scenario(args.scenario, sim_overrides(
                    0.1, app, check[app] if check else None, args.duration))
    except ScenarioError as exc:
        p.error(f"the scenario with {'the calibrated cpu block' if blocks else 'these settings'}"
                f" does not validate:\n{exc}")

    if args.link_ms is not None:
        link = {"one_way_ms": args.link_ms, "transit_ms": args.link_ms,
                "cpu_per_round_trip_ms": 0.0}
    else:
        link = link_latency()
    hop = link["transit_ms"] if blocks else link["one_way_ms"]
    why = "without that CPU: the calibrated message cost charges it" if blocks else "all of it"
    print(f"link: one-way latency of a framed WebSocket message on loopback "
          f"{link['one_way_ms']:.3f} ms (median; mean round trip "
          f"{link.get('mean_round_trip_ms', 2 * link['one_way_ms']):.3f} ms); both ends' CPU "
          f"per round trip "
          f"{link['cpu_per_round_trip_ms']:.3f} ms; simulated hop {hop:.3f} ms ({why})")
    if blocks:
        for app in apps:
            print(f"cpu ({app}, from {args.calibrated}): "
                  + ", ".join(f"{k} {v}" for k, v in blocks[app].items()))
            if args.calibrated_wan and wan_blocks:
                print(f"cpu ({app}, WAN rows, from {args.calibrated_wan}): "
                      + ", ".join(f"{k} {v}" for k, v in wan_blocks[app].items()))
        if blocks["ledger"] is blocks["kv"] and "ledger" in apps:
            print("note: one cpu block for both apps; the ledger's execution cost is only "
                  "charged if that block sets execute")
    print(f"\n{'links':<12}{'app':<8}{'sim p50':>9}{'real p50':>9}{'ratio':>7}"
          f"{'sim p99':>9}{'real p99':>9}{'ratio':>7}{'sim n':>7}{'real n':>7}  "
          f"bounds (p50 within {BOUNDS['p50']:.0%}, p99 within {BOUNDS['p99']:.0%})")
    rows = []
    for label, emulate_ms in (("loopback", 0.0), (f"WAN {args.wan_ms:g} ms", args.wan_ms)):
        for app in apps:
            chosen = wan_blocks if emulate_ms else blocks
            cpu = chosen[app] if chosen else None
            sim = simulated(args.scenario, sim_overrides(emulate_ms + hop, app, cpu,
                                                         args.duration))
            app_only = [f"workload.app={app}"] + ([f"duration={args.duration}"]
                                                  if args.duration else [])
            rl = real(args.scenario, args.transport, args.broker, emulate_ms, app_only)
            rows.append(row_text(label, app, sim, rl))
            print(rows[-1], flush=True)
    print(f"\nlatencies in ms; ratio = real / simulated; real over {args.transport} with TLS, "
          f"load average {os.getloadavg()[0]:.2f} after the runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
