"""A real cluster on this machine: n node processes on 127.0.0.1, a load, real faults.

Why this exists: `medbft cluster`, the real-network tests and `bench/real.py` all need the
same thing: write a network directory, start one OS process per replica, wait until they
answer, run `medbft.real.load`, apply a scenario's crash and recover entries with real signals
(SIGKILL, then a fresh process that restores from its SQLite file), check that the nodes
agree, and stop every process it started, also when interrupted (Ctrl-C).

Nodes run as `python -m node.server` (the same code as `medbft node`, without importing the
simulator, so a restart takes a fraction of a second). Each node's log goes to
`OUT/logs/<id>.log`, appended across restarts within a run. A run starts from a fresh network:
`clear_cluster_state` first removes what an earlier run left under OUT (its network directory
with keys and node databases, its logs), so no file of that run survives into this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from medbft.real.load import LoadResult, LoadSpec, fetch_json, operator, run_load
from medbft.results import CLUSTER_LOGS, CLUSTER_NETWORK
from medbft.targets import fault_rng, primary_of, resolve_target
from node.ledger.roles import CLIENT_ROLES
from node.netdir import NetworkDir, init_network
from node.realtime import RealClock
from node.tls import api_session

__all__ = ["ClusterSpec", "FaultAction", "LocalCluster", "clear_cluster_state", "free_ports",
           "run_cluster"]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct TCP ports free on `host` right now (the OS picks them)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass(frozen=True)
class FaultAction:
    """One timed crash or recover, relative to the start of the load."""

    at_ns: int
    action: str  # "crash" | "recover"
    target: str  # node id, "primary", "role:<role>" or "random:<k>"


@dataclass
class ClusterSpec:
    nodes: list[tuple[str, str]]
    load: LoadSpec
    out: Path
    protocol: dict[str, float] = field(default_factory=dict)
    faults: list[FaultAction] = field(default_factory=list)
    broker: str | None = None
    """The MQTT broker nodes and clients use. None: over TLS, a private Mosquitto started
    from the configuration `keys init` writes (on a free port); in plaintext, the anonymous
    broker at mqtt://127.0.0.1:1883."""
    insecure_plaintext: bool = False
    """No TLS and an anonymous broker (`keys init --insecure-plaintext`): experiments only."""
    sync: str = "normal"
    ready_timeout_s: float = 20.0
    converge_timeout_s: float = 10.0
    node_args: list[str] = field(default_factory=list)
    link_delay_ms: float = 0.0
    """Emulated one-way link delay (network.json `emulation`), e.g. a scenario's latency."""
    app: str = "ledger"
    """The state machine the nodes run: `ledger` or `kv` (node/apps.py)."""
    client_roles: dict[str, str] | None = None
    """Client id -> ledger role (a scenario's population); None: netdir's default."""



def mosquitto_binary() -> str | None:
    """Where the `mosquitto` binary is (on PATH, or Debian's /usr/sbin), or None."""
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()),
        None)

class LocalCluster:
    """Starts, kills, restarts and stops node processes of one network directory."""

    def __init__(self, net: NetworkDir, transport: str, log_dir: Path, *,
                 broker: str | None = None, sync: str = "normal",
                 extra_args: list[str] | None = None) -> None:
        self.net = net
        self.transport = transport
        self.log_dir = log_dir
        self.broker = broker
        self.sync = sync
        self.extra_args = list(extra_args or [])
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.broker_proc: subprocess.Popen[bytes] | None = None
        self.cpu_s: dict[str, float] = {}
        if not log_dir.exists():  # logs name clients and requests: private, like the data
            log_dir.mkdir(parents=True, mode=0o700)
            os.chmod(log_dir, 0o700)

    def command(self, node_id: str) -> list[str]:
        cmd = [sys.executable, "-m", "node.server", "--network", str(self.net.path),
               "--id", node_id, "--transport", self.transport, "--sync", self.sync]
        if self.broker and self.transport == "mqtt":
            cmd += ["--broker", self.broker]
        return cmd + self.extra_args

    def start(self, node_id: str) -> None:
        """Start (or restart) `node_id`'s process; it restores from its database if any."""
        old = self.procs.get(node_id)
        if old is not None and old.poll() is None:
            raise RuntimeError(f"{node_id} is already running (pid {old.pid})")
        fd = os.open(self.log_dir / f"{node_id}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                     0o600)
        with os.fdopen(fd, "ab") as log:
            self.procs[node_id] = subprocess.Popen(
                self.command(node_id), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def start_all(self) -> None:
        for node_id in self.net.membership.node_ids:
            self.start(node_id)

    def alive(self, node_id: str) -> bool:
        proc = self.procs.get(node_id)
        return proc is not None and proc.poll() is None

    def kill(self, node_id: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` (default SIGKILL: no chance to flush anything) and reap the process."""
        proc = self.procs.get(node_id)
        if proc is None or proc.poll() is not None:
            return
        self._note_cpu(node_id, proc.pid)
        proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)

    def _note_cpu(self, node_id: str, pid: int) -> None:
        """Add the process's CPU seconds so far to `cpu_s` (Linux /proc; best effort)."""
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks = int(fields[11]) + int(fields[12])
            self.cpu_s[node_id] = self.cpu_s.get(node_id, 0.0) + ticks / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used by each node's processes (dead ones and the live one)."""
        out = dict(self.cpu_s)
        for node_id, proc in self.procs.items():
            if proc.poll() is None:
                before = self.cpu_s.get(node_id, 0.0)
                self._note_cpu(node_id, proc.pid)
                out[node_id] = self.cpu_s[node_id]
                self.cpu_s[node_id] = before
        return out

    def start_broker(self, timeout_s: float = 10.0) -> None:
        """Start Mosquitto from the configuration `keys init` wrote (DIR/mosquitto.conf) and
        wait until it listens; `stop_all` stops it. Its log goes to LOGS/mosquitto.log.
        Raises RuntimeError if there is no `mosquitto` binary or it does not come up."""
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("no mosquitto binary (apt-get install mosquitto); or give "
                               "--broker URL of a broker started with "
                               f"{self.net.path / 'mosquitto.conf'}")
        parts = urlsplit(str(self.net.settings["mqtt"]["broker"]))
        host, port = parts.hostname or "127.0.0.1", parts.port or 8883
        fd = os.open(self.log_dir / "mosquitto.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                     0o600)
        with os.fdopen(fd, "ab") as log:
            self.broker_proc = subprocess.Popen(
                [binary, "-c", str(self.net.path.resolve() / "mosquitto.conf")], stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.broker_proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited (code {self.broker_proc.returncode}); "
                                   f"see {self.log_dir / 'mosquitto.log'}")
            with contextlib.suppress(OSError), socket.create_connection((host, port), 0.2):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto not listening on {host}:{port} within "
                                   f"{timeout_s:g} s; see {self.log_dir / 'mosquitto.log'}")
            time.sleep(0.05)

    def stop_all(self, timeout_s: float = 5.0) -> dict[str, int | None]:
        """SIGTERM every live node (and the broker `start_broker` started), wait, SIGKILL
        stragglers. Returns the nodes' exit codes. Safe to call twice and from a `finally`
        after Ctrl-C."""
        for node_id, proc in self.procs.items():
            if proc.poll() is None:
                self._note_cpu(node_id, proc.pid)
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        codes: dict[str, int | None] = {}
        for node_id, proc in self.procs.items():
            try:
                codes[node_id] = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[node_id] = proc.wait()
        broker, self.broker_proc = self.broker_proc, None
        if broker is not None and broker.poll() is None:
            broker.terminate()
            try:
                broker.wait(timeout=5)
            except subprocess.TimeoutExpired:
                broker.kill()
                broker.wait()
        return codes

    async def wait_ready(self, session: aiohttp.ClientSession, node_ids: Iterator[str] | list[str],
                         timeout_s: float) -> None:
        """Until each node answers /status (and, over HTTP, has its peer links up). Raises
        RuntimeError naming the node (and its log) when one does not in time or exits."""
        deadline = time.monotonic() + timeout_s
        for node_id in list(node_ids):
            while True:
                if not self.alive(node_id):
                    raise RuntimeError(f"{node_id} exited (code {self.procs[node_id].poll()}); "
                                       f"see {self.log_dir / (node_id + '.log')}")
                status = await fetch_json(session, f"{self.net.url(node_id)}/status")
                if status is not None and self._links_up(status):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{node_id} not ready within {timeout_s:g} s; see "
                                       f"{self.log_dir / (node_id + '.log')}")
                await asyncio.sleep(0.05)

    def _links_up(self, status: dict[str, Any]) -> bool:
        peers = status.get("peers", {})
        alive = {p for p in self.net.membership.node_ids if self.alive(p)}
        return all(v.get("connected") for p, v in peers.items() if p in alive or p == "broker")


async def _apply_fault(cluster: LocalCluster, session: aiohttp.ClientSession,
                       fault: FaultAction, rng: random.Random) -> list[str]:
    """Crash (SIGKILL) or restart the replicas `fault.target` names now, chosen by the rule
    the simulator uses (medbft.targets); returns the replicas it acted on."""
    ids = list(cluster.net.membership.node_ids)
    primary = None
    if fault.target == "primary":
        live = [i for i in ids if cluster.alive(i)]
        rows = await asyncio.gather(*(fetch_json(session, f"{cluster.net.url(i)}/status")
                                      for i in live))
        primary = primary_of(ids, ((row["view"], row["view_active"]) for row in rows
                                   if row is not None))
    roles = {i: cluster.net.membership.role_of(i) for i in ids}
    chosen = resolve_target(fault.target, ids, roles, primary, rng)
    acted = []
    for node_id in chosen:
        if fault.action == "crash" and cluster.alive(node_id):
            cluster.kill(node_id)
            acted.append(node_id)
        elif fault.action == "recover" and not cluster.alive(node_id):
            cluster.start(node_id)
            acted.append(node_id)
    return acted


async def _run_faults(cluster: LocalCluster, session: aiohttp.ClientSession, clock: RealClock,
                      faults: list[FaultAction], seed: int,
                      windows: list[dict[str, Any]]) -> None:
    """Apply `faults` on time, recording crash windows as the simulator does (kind, target,
    start_s, end_s, label: summary.json's `faults`)."""
    rng = fault_rng(seed)
    for fault in sorted(faults, key=lambda f: f.at_ns):
        delay = fault.at_ns - clock.now_ns
        if delay > 0:
            await asyncio.sleep(delay / 1e9)
        nodes = await _apply_fault(cluster, session, fault, rng)
        now_s = clock.now_ns / 1e9
        for node in nodes:
            if fault.action == "crash":
                windows.append({"kind": "crash", "target": node, "start_s": now_s,
                                "end_s": None, "label": f"{node} crashed (SIGKILL)"})
                continue
            for window in windows:
                if window["target"] == node and window["end_s"] is None:
                    window["end_s"] = now_s


async def converge(net: NetworkDir, session: aiohttp.ClientSession, node_ids: list[str],
                   timeout_s: float) -> dict[str, Any]:
    """Wait until the given nodes have executed the same seq, then compare state digests."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await asyncio.gather(*(fetch_json(session, f"{net.url(i)}/state", operator(net))
                                      for i in node_ids))
        states = {i: r for i, r in zip(node_ids, rows, strict=True) if r is not None}
        seqs = {r["last_executed"] for r in states.values()}
        if (len(seqs) == 1 and len(states) == len(node_ids)) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    digests = {r["digest"] for r in states.values()}
    return {"ok": len(seqs) == 1 and len(digests) == 1 and len(states) == len(node_ids),
            "nodes": {i: {"last_executed": r["last_executed"], "digest": r["digest"]}
                      for i, r in sorted(states.items())}}


async def run_cluster(spec: ClusterSpec, cluster_box: list[LocalCluster] | None = None,
                      log: Any = lambda line: None, progress: Any = None,
                      during_load: Any = None) -> LoadResult:
    """Write a network under `spec.out/network`, start it, load it, apply the faults, check
    agreement, stop it. The summary's `faults` are the crash windows applied; `safety` gains
    `state_agreement`, each of `nodes` its process's `exit_code`, `cpu` the CPU seconds of
    each node. `cluster_box` receives the cluster as soon as it exists (so a caller can
    stop it from a `finally` on Ctrl-C). `progress` is handed to `run_load`. `during_load(net)`,
    a coroutine function, runs beside the load from its start and is cancelled at its end
    (bench/receipts.py's reader)."""
    clear_cluster_state(spec.out)
    ports = free_ports(len(spec.nodes))
    clients = spec.load.clients or (len(CLIENT_ROLES) if spec.app == "ledger" else 1)
    own_broker = (spec.load.transport == "mqtt" and spec.broker is None
                  and not spec.insecure_plaintext)
    broker = f"mqtts://127.0.0.1:{free_ports(1)[0]}" if own_broker else spec.broker
    net = init_network(spec.out / "network", spec.nodes, clients=clients,
                       ports=ports, protocol=spec.protocol, broker=broker,
                       state_machine=spec.app, client_roles=spec.client_roles,
                       link_delay_ms=spec.link_delay_ms, force=True,
                       insecure_plaintext=spec.insecure_plaintext)
    cluster = LocalCluster(net, spec.load.transport, spec.out / "logs", broker=spec.broker,
                           sync=spec.sync, extra_args=spec.node_args)
    if cluster_box is not None:
        cluster_box.append(cluster)
    windows: list[dict[str, Any]] = []
    try:
        if own_broker:
            cluster.start_broker()
            log(f"mosquitto started from {net.path / 'mosquitto.conf'}")
        cluster.start_all()
        async with api_session(net) as session:
            await cluster.wait_ready(session, list(net.membership.node_ids), spec.ready_timeout_s)
            log(f"{len(spec.nodes)} nodes ready over {spec.load.transport}")
            tasks: list[asyncio.Task[None]] = []

            def on_start(clock: RealClock) -> None:
                if spec.faults:
                    tasks.append(asyncio.create_task(
                        _run_faults(cluster, session, clock, spec.faults, spec.load.seed,
                                    windows)))
                if during_load is not None:
                    tasks.append(asyncio.create_task(during_load(net)))

            started = time.monotonic()
            result = await run_load(net, spec.load, on_start=on_start, log=log,
                                    progress=progress)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            alive = [i for i in net.membership.node_ids if cluster.alive(i)]
            agreement = await converge(net, session, alive, spec.converge_timeout_s)
            elapsed = time.monotonic() - started
    finally:
        codes = cluster.stop_all()
    cpu = cluster.cpu_seconds()
    summary = result.summary
    summary["faults"] = windows
    summary["safety"]["state_agreement"] = agreement
    for node_id, code in codes.items():
        summary["nodes"].setdefault(node_id, {})["exit_code"] = code
    summary["cpu"] = {"model": "real", "cpu_seconds": {k: round(v, 3) for k, v in
                                                       sorted(cpu.items())},
                      "utilisation": {k: round(v / elapsed, 4) for k, v in
                                      sorted(cpu.items())}}
    (spec.out / "network" / "ports.json").write_text(json.dumps(ports))
    return result


def clear_cluster_state(out: Path) -> None:
    """Remove what an earlier cluster run left under `out`: the whole `network/` folder (keys,
    certificates, node databases: state of that run; a symlink is unlinked, never followed)
    and the logs in `logs/` (`<id>.log`, `mosquitto.log`; other files there are left). Then
    init_network writes a fresh network and the nodes start from empty databases."""
    network, logs = out / CLUSTER_NETWORK, out / CLUSTER_LOGS
    if network.is_symlink() or network.is_file():
        network.unlink()
    elif network.is_dir():
        shutil.rmtree(network)
    if logs.is_symlink():
        logs.unlink()
    elif logs.is_dir():
        for path in logs.glob("*.log"):
            if path.is_file() or path.is_symlink():
                path.unlink()
        if not any(logs.iterdir()):
            logs.rmdir()
