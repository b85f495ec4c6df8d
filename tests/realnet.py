"""Helpers for the thin real-network tests: a cluster of node processes on 127.0.0.1.

Not a test module. Every wait polls for a condition with a deadline (never a fixed sleep as
an assertion), so the tests hold on a loaded 2-core machine.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from medbft.real import cluster
from medbft.real.cluster import LocalCluster, free_ports
from medbft.real.load import LoadResult, LoadSpec, fetch_json, operator, run_load
from node.netdir import NetworkDir, default_node_ids, init_network
from node.tls import api_session

FAST_PROTOCOL = {
    "view_change_timeout_ms": 300,
    "client_timeout_ms": 300,
    "checkpoint_interval": 16,
    "watermark_window": 64,
}
"""Short timeouts so view changes and retransmissions happen within a test's seconds."""

BROKER = "mqtt://127.0.0.1:1883"
"""The shared anonymous broker: only for networks written with `insecure_plaintext`."""


NO_MOSQUITTO = ("no mosquitto binary to start the network's broker with; install Mosquitto "
                "(`apt-get install mosquitto`)")


def require_mosquitto() -> None:
    """Skip without Mosquitto; under CI (the `CI` environment variable set) fail instead:
    CI must not pass by testing nothing."""
    if cluster.mosquitto_binary():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{NO_MOSQUITTO}; CI is set, so a missing broker fails rather than skips",
                    pytrace=False)
    pytest.skip(NO_MOSQUITTO)


@contextmanager
def real_cluster(tmp_path: Path, transport: str, n: int = 4,
                 protocol: dict[str, float] | None = None,
                 clients: int = 2,
                 insecure_plaintext: bool = False,
                 node_args: list[str] | None = None) -> Iterator[LocalCluster]:
    """n node processes of a fresh network under `tmp_path`, ready; stopped on exit. Over TLS
    (the default) an MQTT cluster gets its own Mosquitto, started from the configuration
    `keys init` wrote, on a free port; in plaintext it uses the anonymous broker `BROKER`."""
    broker = BROKER if insecure_plaintext else f"mqtts://127.0.0.1:{free_ports(1)[0]}"
    net = init_network(tmp_path / "net", default_node_ids(n), clients=clients,
                       ports=free_ports(n), protocol={**FAST_PROTOCOL, **(protocol or {})},
                       broker=broker, insecure_plaintext=insecure_plaintext)
    cluster = LocalCluster(net, transport, tmp_path / "logs", extra_args=node_args)
    try:
        if transport == "mqtt" and not insecure_plaintext:
            cluster.start_broker()
        cluster.start_all()
        asyncio.run(_ready(cluster, list(net.membership.node_ids)))
        yield cluster
    finally:
        codes = cluster.stop_all()
        assert all(code in (0, -9) for code in codes.values()), (codes, logs(cluster))


@contextmanager
def own_broker(net: NetworkDir, logs_dir: Path) -> Iterator[LocalCluster]:
    """`net`'s own Mosquitto, started from the configuration `keys init` wrote (TLS,
    passwords, ACL) and stopped on exit; no nodes. Needs the mosquitto binary."""
    require_mosquitto()
    broker = LocalCluster(net, "mqtt", logs_dir)
    try:
        broker.start_broker()
        yield broker
    finally:
        broker.stop_all()


async def _ready(cluster: LocalCluster, ids: list[str]) -> None:
    async with api_session(cluster.net) as session:
        await cluster.wait_ready(session, ids, timeout_s=30)


def wait_ready(cluster: LocalCluster, ids: list[str]) -> None:
    asyncio.run(_ready(cluster, ids))


def logs(cluster: LocalCluster) -> str:
    return "\n".join(f"--- {p.name}\n" + p.read_text()[-3000:]
                     for p in sorted(cluster.log_dir.glob("*.log")))


def load(net: NetworkDir, transport: str, seconds: float, outstanding: int = 4,
         clients: int = 1, **kw: Any) -> LoadResult:
    spec = LoadSpec(duration_ns=int(seconds * 1e9), drain_ns=10_000_000_000,
                    outstanding=outstanding, clients=clients, transport=transport, **kw)
    return asyncio.run(run_load(net, spec))


def statuses(net: NetworkDir) -> dict[str, dict[str, Any]]:
    async def go() -> dict[str, dict[str, Any]]:
        async with api_session(net) as session:
            rows = await asyncio.gather(*(fetch_json(session, f"{net.url(i)}/{path}", operator(net))
                                          for i in net.membership.node_ids
                                          for path in ("status", "state")))
        out = {}
        for k, nid in enumerate(net.membership.node_ids):
            status, state = rows[2 * k], rows[2 * k + 1]
            if status is not None and state is not None:
                out[nid] = {**status, "digest": state["digest"]}
        return out

    return asyncio.run(go())


def poll(condition: Callable[[], Any], timeout_s: float, what: str,
         interval_s: float = 0.05) -> Any:
    """Call `condition` until it returns something truthy; fail naming `what` otherwise."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; last: {last!r}")


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]
