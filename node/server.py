"""One replica as a real process: the same `Replica` and `NodeRuntime` as the simulator, on a
real asyncio loop, with durable storage, a transport and an HTTP API.

Why this exists: the simulator is only as credible as its agreement with reality. This is the
only code between the sans-I/O core and the real world, and it mirrors `sim.run`: build the
replica, wrap it in `NodeRuntime` (no CPU cost model: the real CPU pays), connect the
transport. What real mode adds:

- **Durability.** The replica runs with `Config(durable=True)` and emits `Persist` effects
  first in each step's output; they are staged in `node.storage` and committed before any
  frame leaves (the transport's `Outbox.before_flush`). On start the replica is rebuilt with
  `Replica.restore_durable(votes, checkpoint, blocks, stable)` and started with
  `Start(recovering=True)`, which fetches what it missed by state transfer.
- **Shutdown.** SIGTERM/SIGINT stop the runtime (timers off), flush and commit what is
  queued, close links and the database, and exit 0. SIGKILL loses nothing committed.
- **Back-fill** (`node.backfill`): blocks a state transfer skipped are fetched from the
  other nodes' APIs and stored once f+1 of them vouch for each one's digest.
- **Damage** (`node.storage`): a store that fails its checksums, is truncated or empty stops
  the start with one line, exit 2, unless `--rebuild` (moved aside, state fetched anew).
- **API** (`node.api`): submit signed transactions, query the ledger and state, `/status`,
  `/metrics`. It listens where genesis.json says (127.0.0.1 by default) unless `--listen`.

Run it as `medbft node --network DIR --id hospital-1 --transport http` (or `python -m
node.server ...`, which starts faster: it imports nothing of the simulator).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web

from node import messages as m
from node.api import build_app
from node.apps import make_state_machine
from node.backfill import Backfill
from node.crypto import Keyring
from node.events import Persist, Trace
from node.limits import ConnectionCap, Limits, Refusals, ServerLog
from node.netdir import NetworkDir, NetworkError
from node.pbft import Replica
from node.realtime import RealClock, run, steady_gc, uvloop_available
from node.runtime import NodeRuntime
from node.storage import ForeignStorage, Storage, StorageError
from node.transport.http import HttpTransport
from node.transport.mqtt import BrokerSettings, MqttTransport

__all__ = ["NodeOptions", "NodeServer", "add_node_arguments", "main", "options_from_args"]

log = logging.getLogger("medbft.node")

TRANSPORTS = ("http", "mqtt")
#: `/status` lists the views this node entered most recently, at most this many (a harness
#: counts a run's view changes from the lists before and after it).
MAX_VIEWS_LISTED = 256


@dataclass
class NodeOptions:
    """How to run one node (the `medbft node` command line)."""

    network: Path
    node_id: str
    transport: str = "http"
    listen: str | None = None
    broker: str | None = None
    broker_username: str | None = None
    broker_password: str | None = None
    broker_ca: str | None = None
    broker_insecure: bool = False
    qos: int | None = None
    data: Path | None = None
    sync: str = "normal"
    trace: Path | None = None
    limits: Limits = field(default_factory=Limits)
    rebuild: bool = False


class NodeServer:
    """Wires replica, runtime, storage, transport and API together; `start()`/`stop()`."""

    def __init__(self, net: NetworkDir, opts: NodeOptions) -> None:
        if opts.transport not in TRANSPORTS:
            raise NetworkError(f"transport must be one of {', '.join(TRANSPORTS)}; "
                               f"got {opts.transport!r}")
        self.net = net
        self.opts = opts
        self.id = opts.node_id
        self.address = net.address(self.id)
        self.identity = net.identity(self.id)
        self.started_ns = time.monotonic_ns()
        self.recovered = False
        self.trace_counts: dict[str, int] = {}
        self.views_entered: collections.deque[int] = collections.deque(maxlen=MAX_VIEWS_LISTED)
        self.drops_bad: dict[str, int] = {}
        self.drops_benign: dict[str, int] = {}
        self.executed_requests = 0
        self.received = 0
        self._waiters: dict[str, list[asyncio.Future[int]]] = {}
        self._trace_file: TextIO | None = None
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.AbstractServer | None = None
        self.refusals = Refusals(logging.getLogger("medbft.limits"),
                                 lines_per_s=opts.limits.log_per_s)
        self._backfill_task: asyncio.Future[None] | None = None
        self.failed = asyncio.Event()
        self.fatal: str | None = None
        self._stopping = False

    # -- assembling ---------------------------------------------------------------------------

    def _build_replica(self) -> Replica:
        net = self.net
        keyring = Keyring(self.identity, net.membership.public_keys())
        machine = make_state_machine(net.state_machine, net.membership)
        replica = Replica(net.membership, self.id, keyring, machine, net.config(durable=True))
        records = self.storage.load()
        if not records.empty:
            try:
                replica.restore_durable(records.votes, records.checkpoint, records.blocks,
                                        records.stable)
            except ValueError as exc:
                raise StorageError(f"{self.storage.path}: cannot rebuild the replica from it: "
                                   f"{exc}") from exc
            self.recovered = True
            log.info("restored from %s: stable checkpoint %d, last executed %d, view %d",
                     self.storage.path, records.checkpoint_seq, replica.last_executed,
                     replica.view)
        return replica

    def _build_transport(self, loop: asyncio.AbstractEventLoop) -> HttpTransport | MqttTransport:
        net, opts = self.net, self.opts
        if opts.transport == "http":
            # Its own keyring: connection hellos must not count as protocol crypto.
            keys = Keyring(self.identity, net.membership.public_keys())
            peers = {p: net.url(p) for p in net.membership.node_ids if p != self.id}
            return HttpTransport(keys, net.membership, net.network_id, loop, dial=peers,
                                 before_flush=self._commit, link_delay_s=net.link_delay_s,
                                 limits=opts.limits, refusals=self.refusals,
                                 ssl_context=net.client_ssl(self.id))
        mqtt = net.settings["mqtt"]
        broker = BrokerSettings.for_party(
            net, self.id, opts.broker, username=opts.broker_username,
            password=opts.broker_password or os.environ.get("MEDBFT_BROKER_PASSWORD"),
            ca_file=opts.broker_ca, insecure=opts.broker_insecure, qos=opts.qos)
        return MqttTransport(self.id, broker, str(mqtt["topic_prefix"]), loop,
                             replicas=net.membership.node_ids, before_flush=self._commit,
                             link_delay_s=net.link_delay_s)

    async def start(self) -> None:
        """Open storage, rebuild the replica, connect, serve the API, start the protocol.
        Raises NetworkError/StorageError/OSError for bad setup (port taken, wrong database)."""
        loop = asyncio.get_running_loop()
        self._open_storage()
        if self.opts.trace is not None:
            fd = os.open(self.opts.trace, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._trace_file = os.fdopen(fd, "a")
        self.transport = self._build_transport(loop)
        self.runtime = NodeRuntime(self.replica, self.transport,
                                   RealClock(loop),  # type: ignore[arg-type]
                                   trace=self._on_trace, on_other=self._on_effect)
        self.transport.on_receive = self._receive
        await self._serve_api()
        await self.transport.start()
        self.runtime.start(recovering=self.recovered)
        peers = {p: self.net.url(p) for p in self.net.membership.node_ids if p != self.id}
        self.backfill = Backfill(self.storage, peers, self.replica.f, lambda: self.replica.h,
                                 signer=self.identity,
                                 ssl_context=self.net.client_ssl(self.id))
        self._backfill_task = asyncio.ensure_future(self.backfill.run())
        log.info("node %s ready: %s transport, API on %s://%s, %s", self.id,
                 self.opts.transport, "https" if self.net.tls else "http (INSECURE PLAINTEXT)",
                 self._listen_address(),
                 "recovering from disk" if self.recovered else "fresh start")

    def _open_storage(self) -> None:
        """Open and verify the database and rebuild the replica from it. A damaged store
        (StorageError) stops the start, unless `--rebuild`: then the damaged files are moved
        aside and the node starts empty and catches up by state transfer."""
        path = self.opts.data or self.net.data_path(self.id)
        opened: Storage | None = None
        try:
            opened = self.storage = Storage(path, owner=self.id,
                                            network_id=self.net.network_id, sync=self.opts.sync)
            self.replica = self._build_replica()
            return
        except StorageError as exc:
            if opened is not None:
                opened.abandon()
            if isinstance(exc, ForeignStorage):
                raise
            if not self.opts.rebuild:
                raise StorageError(f"{exc}; refusing to start (--rebuild moves it aside and "
                                   "rebuilds the state from the other nodes)") from exc
            kept = Storage.discard(path)
            log.warning("%s; --rebuild: kept it as %s, rebuilding by state transfer", exc, kept)
        self.storage = Storage(path, owner=self.id, network_id=self.net.network_id,
                               sync=self.opts.sync)
        self.replica = self._build_replica()
        self.recovered = True  # start recovering: fetch the state from the others

    def _listen_address(self) -> str:
        host, _, port = self.address.rpartition(":")
        return f"{self.opts.listen or host}:{port}"

    async def _serve_api(self) -> None:
        limits = self.opts.limits
        app = build_app(self, limits, self.refusals)
        if isinstance(self.transport, HttpTransport):
            self.transport.attach(app)
        # keepalive_timeout: aiohttp closes a connection that has not delivered a complete
        # request (headers) this long after opening or after its last response.
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=1.0,
            keepalive_timeout=limits.header_timeout_s,
            lingering_time=min(2.0, limits.body_timeout_s),
            logger=ServerLog(logging.getLogger("aiohttp.server"), self.refusals))
        await self._runner.setup()
        assert self._runner.server is not None
        host, _, port = self._listen_address().rpartition(":")
        self._listener = await asyncio.get_running_loop().create_server(
            ConnectionCap(self._runner.server, limits.max_connections, self.refusals),
            host, int(port), reuse_address=True, ssl=self.net.server_ssl(self.id),
            ssl_handshake_timeout=limits.header_timeout_s if self.net.tls else None)

    async def stop(self) -> None:
        """Clean shutdown: no more protocol steps, flush and commit, close everything."""
        if self._stopping:
            return
        self._stopping = True
        if self._backfill_task is not None:
            self._backfill_task.cancel()
        self.runtime.crash()
        try:
            await self.transport.close()
        except Exception as exc:  # failed final commit
            log.error("closing the transport: %r", exc)
        if self._listener is not None:
            self._listener.close()
        if self._runner is not None:
            await self._runner.cleanup()
        try:
            self.storage.close()
        except Exception as exc:  # already logged as fatal
            log.error("closing storage: %r", exc)
        if self._trace_file is not None:
            self._trace_file.close()
        log.info("node %s stopped (last executed %d)", self.id, self.replica.last_executed)

    # -- effects and traces -------------------------------------------------------------------

    def _receive(self, data: bytes) -> None:
        self.received += 1
        self.runtime.receive(data)

    def _on_effect(self, eff: Any) -> None:
        if type(eff) is Persist:
            self.storage.stage(eff.key, eff.data, eff.digest, eff.seq)

    def _commit(self) -> None:
        """Runs before any frame leaves: make the staged Persist records durable. If the disk
        fails nothing may be sent, so the node stops."""
        try:
            self.storage.commit()
        except Exception as exc:
            self.fatal = f"storage commit failed: {exc!r}"
            log.critical("%s; stopping", self.fatal)
            self.runtime.crash()
            self.failed.set()
            raise

    def _on_trace(self, node: str, now_ns: int, tr: Trace) -> None:
        event = tr.event
        self.trace_counts[event] = self.trace_counts.get(event, 0) + 1
        fields = tr.fields
        if event == "drop":  # the replica says whether the sender misbehaved (`bad`)
            table = self.drops_bad if fields.get("bad") else self.drops_benign
            table[fields["reason"]] = table.get(fields["reason"], 0) + 1
        elif event == "enter-view":
            self.views_entered.append(int(fields["view"]))
        elif event == "execute":
            self.executed_requests += len(fields["executed"])
            if self._waiters:
                for key in fields["requests"]:
                    for fut in self._waiters.pop(key, ()):
                        if not fut.done():
                            fut.set_result(int(fields["seq"]))
        if self._trace_file is not None and event != "drop":
            row = {"t": now_ns, "node": node, "event": event, **fields}
            self._trace_file.write(json.dumps(row, separators=(",", ":")) + "\n")

    # -- what the API uses --------------------------------------------------------------------

    def submit(self, envelope: bytes) -> None:
        """Hand a checked client request envelope to the replica, as if it came off the wire."""
        self._receive(envelope)

    async def wait_executed(self, key: str, timeout_s: float) -> int | None:
        """The seq at which request `key` (client/session/timestamp) executes here, or None
        if it does not within `timeout_s`."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(fut)
        try:
            seq = await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            return None
        finally:
            waiting = self._waiters.get(key)
            if waiting is not None and fut in waiting:
                waiting.remove(fut)
                if not waiting:
                    del self._waiters[key]
        self.storage.commit()  # answer only once the block is durable
        return seq

    def status(self) -> dict[str, Any]:
        r = self.replica
        stats = self.transport.stats
        return {
            "id": self.id,
            "role": self.net.membership.role_of(self.id),
            "network_id": self.net.network_id,
            "transport": self.opts.transport,
            "view": r.view,
            "view_active": r.view_active,
            "primary": r.ids[r.primary],
            "last_executed": r.last_executed,
            "stable_checkpoint": r.h,
            "next_seq": r.next_seq,
            "pending_requests": len(r.pending),
            "recovered_from_disk": self.recovered,
            "uptime_s": round((time.monotonic_ns() - self.started_ns) / 1e9, 3),
            "peers": self.transport.peer_status(),
            "views_entered": list(self.views_entered),
            "counters": {
                "messages_sent": stats.messages_sent, "bytes_sent": stats.bytes_sent,
                "sent_by_kind": dict(sorted(stats.sent_by_kind.items())),
                "sent_bytes_by_kind": dict(sorted(stats.sent_bytes_by_kind.items())),
                "messages_received": self.received, "frames_sent": stats.frames_sent,
                "frames_received": stats.frames_received, "bad_frames": stats.bad_frames,
                "dropped_no_route": stats.dropped_no_route,
                "dropped_queue_full": stats.dropped_queue_full,
                "rejected": dict(sorted(self.drops_bad.items())),
                "refused": dict(sorted(self.refusals.counts.items())),
                "ignored": dict(sorted(self.drops_benign.items())),
                "events": dict(sorted(self.trace_counts.items())),
                "executed_requests": self.executed_requests,
                "storage_commits": self.storage.commits,
                "backfilled_blocks": self.backfill.filled if self._backfill_task else 0,
                "backfill_refused": self.backfill.refused if self._backfill_task else 0,
            },
        }

    def block_json(self, seq: int, raw: bytes) -> dict[str, Any]:
        cb = m.decode(raw)
        assert type(cb) is m.CommittedBatch
        return {
            "seq": cb.seq, "view": cb.view, "digest": cb.batch.digest().hex(),
            "timestamp_ns": cb.batch.timestamp_ns,
            "requests": [{"key": f"{q.client}/{q.session}/{q.timestamp}", "client": q.client,
                          "session": q.session, "timestamp": q.timestamp, "op": _text(q.op)}
                         for q in cb.batch.requests],
        }


def _text(op: bytes) -> str:
    try:
        return op.decode()
    except UnicodeDecodeError:
        return "hex:" + op.hex()


# -- command line -----------------------------------------------------------------------------


def add_node_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `medbft node` (shared with `python -m node.server`)."""
    parser.add_argument("--network", required=True, type=Path, help="network directory "
                        "(from `medbft keys init`)")
    parser.add_argument("--id", required=True, dest="node_id", help="this node's id, e.g. "
                        "hospital-1")
    parser.add_argument("--transport", choices=TRANSPORTS, default="http")
    parser.add_argument("--listen", metavar="HOST", help="listen on HOST instead of the host "
                        "in genesis.json (default: loopback as generated)")
    parser.add_argument("--broker", metavar="URL", help="MQTT broker, mqtt://[user[:pw]@]"
                        "host[:port] or mqtts://... (default: network.json)")
    parser.add_argument("--broker-username")
    parser.add_argument("--broker-password", help="better: set MEDBFT_BROKER_PASSWORD")
    parser.add_argument("--broker-ca", metavar="FILE", help="CA bundle for mqtts://")
    parser.add_argument("--broker-insecure", action="store_true",
                        help="do not verify the broker's TLS certificate (testing only)")
    parser.add_argument("--qos", type=int, choices=(0, 1, 2), help="MQTT QoS (default: "
                        "network.json, normally 0; see docs/real-network.md)")
    parser.add_argument("--data", type=Path, help="SQLite file (default DIR/data/<id>.db)")
    parser.add_argument("--sync", choices=("normal", "full", "off"), default="normal",
                        help="SQLite durability: normal survives kill -9, full also power loss")
    parser.add_argument("--rebuild", action="store_true",
                        help="if the local database is damaged (fails its checksums, truncated, "
                        "empty), move it aside and rebuild the state from the other nodes "
                        "instead of refusing to start")
    parser.add_argument("--trace", type=Path, help="append protocol trace events (JSON lines)")
    d = Limits()
    parser.add_argument("--header-timeout", type=float, default=d.header_timeout_s,
                        metavar="S", help="close a connection that sends no complete request "
                        "headers for S seconds (default %(default)g)")
    parser.add_argument("--body-timeout", type=float, default=d.body_timeout_s, metavar="S",
                        help="408 when a request body takes longer (default %(default)g)")
    parser.add_argument("--max-connections", type=int, default=d.max_connections, metavar="N",
                        help="open connections at most; more get 503 (default %(default)d)")
    parser.add_argument("--rate-limit", type=float, default=d.rate_per_s, metavar="R",
                        help="POST /tx requests per second per client, 0 = off "
                        "(default %(default)g)")
    parser.add_argument("--rate-burst", type=int, default=d.rate_burst, metavar="N",
                        help="requests a client may send at once (default %(default)d)")
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    parser.add_argument("--profile-dir", type=Path, metavar="DIR",
                        help="profile this node (cProfile) and write DIR/<id>.pstats when it "
                        "stops cleanly (SIGTERM/SIGINT); for finding where a node's CPU goes "
                        "(bench/real.py --profile), not for production")
    parser.add_argument("--profile-clock", choices=("wall", "cpu"), default="wall",
                        help="what --profile-dir measures: wall time (default) or this "
                        "process's CPU time (not what it spent pre-empted; much slower)")
    parser.add_argument("--log-level", default="INFO",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"))


def options_from_args(args: argparse.Namespace) -> NodeOptions:
    return NodeOptions(
        network=args.network, node_id=args.node_id, transport=args.transport,
        listen=args.listen, broker=args.broker, broker_username=args.broker_username,
        broker_password=args.broker_password, broker_ca=args.broker_ca,
        broker_insecure=args.broker_insecure, qos=args.qos, data=args.data, sync=args.sync,
        trace=args.trace, rebuild=getattr(args, "rebuild", False),
        limits=Limits(header_timeout_s=args.header_timeout, body_timeout_s=args.body_timeout,
                      max_connections=args.max_connections, rate_per_s=args.rate_limit,
                      rate_burst=args.rate_burst),
    )


async def serve(net: NetworkDir, opts: NodeOptions) -> int:
    """Run a node until SIGTERM/SIGINT; 0 on a clean stop, 1 after a fatal storage error."""
    server = NodeServer(net, opts)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    done = asyncio.ensure_future(stop.wait())
    fatal = asyncio.ensure_future(server.failed.wait())
    with steady_gc():  # start-up is done: no more stalls in full collections (node.realtime)
        await asyncio.wait({done, fatal}, return_when=asyncio.FIRST_COMPLETED)
    done.cancel()
    fatal.cancel()
    log.info("shutting down")
    await server.stop()
    return 1 if server.fatal else 0


def run_node(args: argparse.Namespace) -> int:
    """Load the network, then serve on uvloop when available. Raises NetworkError,
    StorageError or OSError for bad setup."""
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format=f"%(asctime)s {args.node_id} %(levelname)s %(name)s: %(message)s")
    net = NetworkDir.load(args.network)
    net.address(args.node_id)
    use_uvloop = not args.no_uvloop
    log.info("event loop: %s", "uvloop" if use_uvloop and uvloop_available() else "asyncio")
    profile_dir: Path | None = getattr(args, "profile_dir", None)
    if profile_dir is None:
        return run(serve(net, options_from_args(args)), use_uvloop=use_uvloop)
    import cProfile  # only when asked: profiling slows every Python call

    from node import _native

    if _native.active():
        log.warning("profiling with the compiled modules in use: cProfile sees each compiled "
                    "function only as a whole; run with MEDBFT_NATIVE=0 for a profile by "
                    "function")

    # Wall time by default; `cpu`: this process's CPU time, so time spent pre-empted or
    # waiting for a core is not charged to the function that was running (each call then
    # costs a system call: the node runs several times slower).
    profiler = (cProfile.Profile(time.process_time) if args.profile_clock == "cpu"
                else cProfile.Profile())
    profiler.enable()
    try:
        return run(serve(net, options_from_args(args)), use_uvloop=use_uvloop)
    finally:
        profiler.disable()
        profile_dir.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(str(profile_dir / f"{args.node_id}.pstats"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node.server",
                                     description="Run one medbft replica.")
    add_node_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_node(args)
    except (NetworkError, StorageError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
