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

It is a measuring tool, never run by the tests; the README records its figures.
"""

from __future__ import annotations

import argparse
import asyncio
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


async def _ping_pong_ws(port: int, count: int, size: int) -> list[float]:
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
        for _ in range(count):
            t0 = time.perf_counter_ns()
            await ws.send_bytes(payload)
            await ws.receive()
            rtts.append((time.perf_counter_ns() - t0) / 1e6)
        await ws.close()
    return rtts


def link_one_way_ms(count: int = 2000, size: int = 300) -> float:
    """Median one-way latency (ms) of a framed WebSocket message between two processes."""
    port = free_ports(1)[0]
    server = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(port)])
    try:
        rtts = run(_ping_pong_ws(port, count, size))
    finally:
        server.terminate()
        server.wait()
    return statistics.median(rtts[count // 10:]) / 2


def simulated(scenario: str, latency_ms: float) -> dict[str, Any]:
    from medbft.scenario import load_scenario
    from sim.run import run_scenario

    sc = load_scenario(scenario, overrides=[f"network.latency={latency_ms:.4f}ms"])
    return run_scenario(sc).summary


def real(scenario: str, transport: str, broker: str | None,
         emulate_ms: float) -> dict[str, Any]:
    from medbft.cli.cluster import spec_from_scenario

    with tempfile.TemporaryDirectory(prefix="medbft-compare-") as tmp:
        args = argparse.Namespace(transport=transport, broker=broker, out=Path(tmp),
                                  sync="normal")
        spec, _ = spec_from_scenario(scenario, args)
        spec.link_delay_ms = emulate_ms
        if broker:
            spec.broker = broker
            # An mqtt:// broker is an anonymous plaintext one: the network must be plaintext.
            spec.insecure_plaintext = broker.startswith("mqtt://")
        from medbft.real.cluster import run_cluster

        return run(run_cluster(spec)).summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scenario", nargs="?", default=str(Path(__file__).parent / "compare.yaml"))
    p.add_argument("--transport", choices=("http", "mqtt"), default="http")
    p.add_argument("--broker", help="MQTT broker URL (mqtt transport)")
    p.add_argument("--wan-ms", type=float, default=5.0, help="emulated link delay of the "
                   "second comparison (default 5 ms)")
    p.add_argument("--link-ms", type=float, help="skip the link measurement; use this one-way "
                                                 "latency (e.g. measured over MQTT)")
    args = p.parse_args()
    one_way = args.link_ms if args.link_ms is not None else link_one_way_ms()
    print(f"link: one-way latency of a framed WebSocket message on loopback: {one_way:.3f} ms")
    for label, emulate_ms in (("loopback", 0.0), (f"WAN {args.wan_ms:g} ms", args.wan_ms)):
        sim = simulated(args.scenario, emulate_ms + one_way)
        rl = real(args.scenario, args.transport, args.broker, emulate_ms)
        ratio = rl["latency_ms"]["p50"] / sim["latency_ms"]["p50"]
        verdict = "within" if abs(ratio - 1) <= 0.25 else "OUTSIDE"
        print(f"{label:<12} simulated p50 {sim['latency_ms']['p50']:8.3f} ms "
              f"({sim['requests']['committed']} requests) | real {args.transport} p50 "
              f"{rl['latency_ms']['p50']:8.3f} ms ({rl['requests']['committed']} requests) | "
              f"real/sim {ratio:.2f}, {verdict} 25 %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
