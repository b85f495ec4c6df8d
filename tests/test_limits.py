"""The node's HTTP listener under hostile input: real aiohttp servers on 127.0.0.1, in process.

Each test starts `NodeServer`s on loopback, attacks them with raw sockets or aiohttp, and
checks the answer, the node's log (one line per refusal, never a traceback) and
`/metrics` (`medbft_refused_total{reason=...}`). Every wait is bounded.

The networks here are written with `insecure_plaintext`: the raw-socket attacks speak HTTP
directly, and what is under test is the HTTP layer's limits, which TLS only wraps (an
unauthenticated TLS client does not get as far as HTTP at all: tests/test_tls.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from medbft.real.cluster import free_ports
from node import messages as m
from node.crypto import Keyring
from node.limits import Limits, Refusals, TokenBuckets, json_depth_ok
from node.netdir import NetworkDir, default_node_ids, init_network
from node.server import NodeOptions, NodeServer

NODE = "hospital-1"


def _network(tmp_path: Path) -> NetworkDir:
    """A key-value network: the limits are the transport's, whatever the app (a ledger node
    would refuse `put a 1` at admission before any limit below is reached)."""
    return init_network(tmp_path / "net", default_node_ids(4), clients=1, ports=free_ports(4),
                        protocol={"view_change_timeout_ms": 300, "client_timeout_ms": 300},
                        state_machine="kv", insecure_plaintext=True)


def _signed(net: NetworkDir, op: bytes, timestamp: int = 1) -> bytes:
    keys = Keyring(net.identity("client-1"), net.membership.public_keys())
    unsigned = m.Request(op, timestamp, "client-1", 0, b"")
    req = m.Request(op, timestamp, "client-1", 0, keys.sign(m.encode(unsigned)))
    return m.encode(m.Envelope("client-1", m.encode(req), b""))


@asynccontextmanager
async def _nodes(net: NetworkDir, tmp_path: Path, ids: list[str],
                 limits: Limits | None = None) -> AsyncIterator[list[NodeServer]]:
    servers = []
    try:
        for nid in ids:
            opts = NodeOptions(network=net.path, node_id=nid, data=tmp_path / f"{nid}.db")
            if limits is not None:
                opts.limits = limits
            server = NodeServer(net, opts)
            await server.start()
            servers.append(server)
        yield servers
    finally:
        for server in servers:
            await server.stop()


def _host_port(net: NetworkDir) -> tuple[str, int]:
    host, _, port = net.address(NODE).rpartition(":")
    return host, int(port)


async def _metrics(net: NetworkDir) -> str:
    async with aiohttp.ClientSession() as s, s.get(f"{net.url(NODE)}/metrics") as r:
        assert r.status == 200
        return await r.text()


def _refused(text: str, reason: str) -> int:
    prefix = f'medbft_refused_total{{node="{NODE}",reason="{reason}"}} '
    return sum(int(float(line[len(prefix):])) for line in text.splitlines()
               if line.startswith(prefix))


def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    noisy = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not noisy, [(r.name, r.getMessage()[:200]) for r in noisy]
    assert "Traceback" not in caplog.text


def _lines(caplog: pytest.LogCaptureFixture, needle: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if needle in r.getMessage()]


async def _closed_within(reader: asyncio.StreamReader, timeout_s: float) -> bytes:
    """What the server sends until it closes the connection (fails after `timeout_s`)."""
    data = b""
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk


# -- pure pieces ---------------------------------------------------------------------------------


def test_json_depth_counts_brackets_outside_strings_only() -> None:
    assert json_depth_ok(b'{"a": [1, {"b": []}]}', 4)
    assert not json_depth_ok(b'{"a": [1, {"b": []}]}', 3)
    assert json_depth_ok(b'{"a": "[[[[[[[[[[[[\\"[[[["}', 1)
    assert not json_depth_ok("[" * 30_000 + "]" * 30_000, 32)
    assert json_depth_ok("[" * 32 + "]" * 32, 32)
    assert not json_depth_ok(b'["\\\\"' + b"[" * 40, 32), "an escaped backslash ends no string"


def test_token_bucket_and_refusal_log_budget(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=2, clock=lambda: now[0])
    assert [buckets.take("c") for _ in range(2)] == [0.0, 0.0]
    assert buckets.take("c") == pytest.approx(0.5)
    assert buckets.take("other") == 0.0
    now[0] = 0.5
    assert buckets.take("c") == 0.0
    assert TokenBuckets(rate=0, burst=1).take("c") == 0.0, "rate 0 is off"

    refusals = Refusals(logging.getLogger("test.refusals"), lines_per_s=3,
                        clock=lambda: now[0])
    with caplog.at_level(logging.INFO, "test.refusals"):
        for _ in range(10):
            refusals.refuse("too-deep", "POST /tx")
        now[0] = 1.5
        refusals.refuse("too-deep")
    assert refusals.counts == {"too-deep": 11}
    assert [r.getMessage() for r in caplog.records] == [
        "refused too-deep: POST /tx"] * 3 + [
        "refused 7 more (not logged; see /metrics refused_total)", "refused too-deep"]


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="header_timeout_s"):
        Limits(header_timeout_s=0)
    with pytest.raises(ValueError, match="max_connections"):
        Limits(max_connections=0)


# -- a real node ---------------------------------------------------------------------------------


@pytest.mark.real
def test_deep_json_body_is_refused_with_400_not_500(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    net = _network(tmp_path)

    async def go() -> None:
        async with _nodes(net, tmp_path, [NODE]), aiohttp.ClientSession() as s:
            for body in (b"[" * 30_000 + b"]" * 30_000,
                         b'{"envelope": ' + b"{" * 20_000 + b"}" * 20_000 + b"}"):
                async with s.post(f"{net.url(NODE)}/tx?wait=5", data=body,
                                  headers={"Content-Type": "application/json"}) as r:
                    assert r.status == 400, await r.text()
                    assert "nested deeper than 32" in (await r.json())["error"]
            assert _refused(await _metrics(net), "too-deep") == 2

    with caplog.at_level(logging.INFO):
        asyncio.run(go())
    _no_tracebacks(caplog)
    assert len(_lines(caplog, "refused too-deep")) == 2
    assert all("[[" not in r.getMessage() for r in caplog.records), "no payload in the log"


@pytest.mark.real
def test_deep_or_large_websocket_hello_is_refused_cleanly(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    net = _network(tmp_path)

    async def go() -> None:
        async with _nodes(net, tmp_path, [NODE]), aiohttp.ClientSession() as s:
            for hello, reason in (("[" * 2000 + "]" * 2000, "hello too deep"),
                                  ("[" * 30_000 + "]" * 30_000, "hello too large"),
                                  ("[1, 2]", "bad hello: not an object")):
                async with s.ws_connect(f"{net.url(NODE)}/ws") as ws:
                    await ws.receive(timeout=5)  # the nonce
                    await ws.send_str(hello)
                    msg = await ws.receive(timeout=5)
                    assert msg.type == aiohttp.WSMsgType.CLOSE, msg
                    assert (msg.data, msg.extra) == (4003, reason)
            text = await _metrics(net)
            assert _refused(text, "hello-hello-too-deep") == 1
            assert _refused(text, "hello-hello-too-large") == 1

    with caplog.at_level(logging.INFO):
        asyncio.run(go())
    _no_tracebacks(caplog)
    assert len(_lines(caplog, "refused hello-")) == 3
    assert all("[[" not in r.getMessage() for r in caplog.records), "no payload in the log"


@pytest.mark.real
def test_oversize_header_gets_a_4xx_and_one_log_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    net = _network(tmp_path)

    async def go() -> None:
        async with _nodes(net, tmp_path, [NODE]):
            host, port = _host_port(net)
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET /status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000
                         + b"\r\n\r\n")
            answer = await _closed_within(reader, 5)
            writer.close()
            status_line = answer.split(b"\r\n", 1)[0]
            assert status_line.split(b" ")[1] in (b"400", b"431"), answer[:200]
            assert _refused(await _metrics(net), "header-too-large") == 1

    with caplog.at_level(logging.INFO):
        asyncio.run(go())
    _no_tracebacks(caplog)
    assert len(_lines(caplog, "header-too-large")) == 1
    assert all("aaaa" not in r.getMessage() for r in caplog.records), "no payload in the log"


@pytest.mark.real
@pytest.mark.slow
def test_slow_clients_are_disconnected_after_the_timeouts(tmp_path: Path) -> None:
    net = _network(tmp_path)
    limits = Limits(header_timeout_s=0.5, body_timeout_s=0.5)

    async def go() -> None:
        async with _nodes(net, tmp_path, [NODE], limits):
            host, port = _host_port(net)
            # silent: connects and sends nothing
            silent_r, silent_w = await asyncio.open_connection(host, port)
            # slow-loris: headers a byte at a time, never finished
            loris_r, loris_w = await asyncio.open_connection(host, port)
            loris_w.write(b"GET /status HTTP/1.1\r\nHost: x\r\n")
            start = time.monotonic()

            async def trickle() -> None:
                while not loris_w.is_closing():
                    loris_w.write(b"X")
                    await asyncio.sleep(0.05)

            dripping = asyncio.create_task(trickle())
            assert await _closed_within(silent_r, 5) == b""
            assert await _closed_within(loris_r, 5) == b""
            assert time.monotonic() - start < 4
            dripping.cancel()
            # slow body: complete headers, then half the body, then nothing
            body_r, body_w = await asyncio.open_connection(host, port)
            body_w.write(b"POST /tx HTTP/1.1\r\nHost: x\r\nContent-Type: application/"
                         b"octet-stream\r\nContent-Length: 100\r\n\r\n" + b"x" * 50)
            answer = await _closed_within(body_r, 5)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            for w in (silent_w, loris_w, body_w):
                w.close()
            assert _refused(await _metrics(net), "body-timeout") == 1
            # a handler that takes longer than the header timeout is not cut off
            async with aiohttp.ClientSession() as s, s.post(
                    f"{net.url(NODE)}/tx?wait=1.2", data=_signed(net, b"put a 1"),
                    headers={"Content-Type": "application/octet-stream"}) as r:
                assert r.status == 504, await r.text()  # one node of four: never executes

    asyncio.run(go())


@pytest.mark.real
def test_connections_beyond_the_cap_get_503_and_are_closed(tmp_path: Path) -> None:
    net = _network(tmp_path)
    limits = Limits(max_connections=3, header_timeout_s=10.0)

    async def go() -> None:
        async with _nodes(net, tmp_path, [NODE], limits):
            host, port = _host_port(net)
            held = [await asyncio.open_connection(host, port) for _ in range(3)]
            await asyncio.sleep(0.1)
            reader, writer = await asyncio.open_connection(host, port)
            answer = await _closed_within(reader, 5)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
            assert b"too many connections" in answer
            for _, w in held:
                w.close()
            deadline = time.monotonic() + 5
            while True:  # the slots free up once the server sees the closes
                try:
                    text = await _metrics(net)
                    break
                except (aiohttp.ClientError, AssertionError):
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
            assert _refused(text, "connection-cap") >= 1

    asyncio.run(go())


@pytest.mark.real
def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    net = _network(tmp_path)
    limits = Limits(rate_per_s=0.5, rate_burst=2)

    async def go() -> None:
        async with _nodes(net, tmp_path, [NODE], limits), aiohttp.ClientSession() as s:
            statuses = []
            for ts in (1, 2, 3):
                async with s.post(f"{net.url(NODE)}/tx", data=_signed(net, b"put a 1", ts),
                                  headers={"Content-Type": "application/octet-stream"}) as r:
                    statuses.append(r.status)
                    retry = r.headers.get("Retry-After")
            assert statuses == [202, 202, 429]
            assert retry is not None and 1 <= int(retry) <= 2
            assert _refused(await _metrics(net), "rate-limited") == 1

    asyncio.run(go())


@pytest.mark.real
def test_a_replayed_executed_request_is_answered_from_the_reply_cache(tmp_path: Path) -> None:
    net = _network(tmp_path)

    async def go() -> None:
        ids = list(net.membership.node_ids)
        async with _nodes(net, tmp_path, ids), aiohttp.ClientSession() as s:
            request = _signed(net, b"put a 1")
            url = f"{net.url(NODE)}/tx?wait=20"
            headers = {"Content-Type": "application/octet-stream"}
            async with s.post(url, data=request, headers=headers) as r:
                first = await r.json()
                assert r.status == 200, first
            start = time.monotonic()
            async with s.post(f"{net.url(NODE)}/tx?wait=5", data=request,
                              headers=headers) as r:
                again = await r.json()
                assert r.status == 200, again
            assert time.monotonic() - start < 2, "answered at once, not after the wait"
            assert again["replayed"] is True and again["key"] == first["key"]
            assert again["result_hex"] == first["result_hex"]

    asyncio.run(go())
