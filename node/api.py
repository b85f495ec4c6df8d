"""The node's HTTP API (aiohttp): submit signed transactions, query the ledger and state, read
status and Prometheus metrics.

Why this exists: operators, dashboards and applications that are not PBFT clients need to
talk to a node over plain HTTP. The API is a thin shell around a running node (a
`NodeBackend`: `node.server.NodeServer`, passed in); it never changes protocol state except by
handing a checked request to the replica, exactly as if it had arrived over the network.

Endpoints (JSON unless noted):
- `POST /tx` submit a signed request: body `application/octet-stream` with the encoded
  Envelope(Request) a `node.client.Client` sends (or the bare encoded Request), or
  `application/json` `{"envelope": "<hex>"}` / `{"request": "<hex>"}`. A transaction the state
  machine does not admit (personal data, free text: docs/security.md) gets 422 with the rule's
  name and goes no further (counted in `/status` as `refused_at_api`, logged without its
  content). 202 with the request key; with `?wait=SECONDS` (at most 30) 200 once this node
  has executed it (its seq and this node's result; a client that needs the PBFT guarantee
  collects f+1 matching replies).
- `GET /ledger?start=SEQ&limit=N` this node's stored blocks (N at most 1000); with
  `&digests=1` only `[seq, batch digest]` pairs (N at most 10,000), for agreement checks.
  Both say which executed seqs this node holds no block for (`missing`: `[from, to]` ranges,
  the history skipped by a state transfer, until `node.backfill` fetches it), so a gap is
  never silent; `&raw=1` serves the encoded blocks (what back-filling peers fetch).
- `GET /state` last executed seq and the state digest, and on a ledger network the ledger's
  counts (blocks, chain head, transactions by kind and outcome, rejections by reason: no entry
  contents); `GET /state/{key}` one entry of a key-value network.
- `GET /query/{kind}?arg=...` (kinds `trace`, `recall-exposure`, `access-log`, `consents`;
  `blocks?from=&to=`) a ledger query's answer with a receipt (node/reads.py,
  node.ledger.receipts) signed by this node; `&wait=SECONDS` (at most 30) waits for a stable
  checkpoint to cover the answer (503 otherwise).
- `GET /checkpoint` the stable checkpoint and its q signed CHECKPOINTs.
- `GET /status` view, primary, last executed, stable checkpoint, peers, counters.
- `GET /metrics` Prometheus text format.

Reads are signed (node/reads.py: headers `X-Medbft-Party`, `X-Medbft-Time`,
`X-Medbft-Signature`) and checked against the read permissions (node.ledger.roles.READS):
unsigned `/ledger`, `/state`, `/query`, `/checkpoint` get 401, a role that may not read them
403. `/status` and `/metrics` stay open unless network.json says `"api": {"open_status":
false}`.

Guards: bodies over `MAX_BODY_BYTES` get 413, malformed bodies 400, wrong content types 415,
unknown clients and bad signatures 403, each with `{"error": "<reason>"}`. Nothing here
trusts the body: it is decoded with the same bounded decoder the replica uses. The listener's
limits (`node.limits`: JSON depth checked before parsing, body timeout 408, per-client rate
limit 429 on `POST /tx`) run as middleware; every refusal is counted by reason in `/metrics`
and logged as one line without payload.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from node import messages as m
from node.apps import query_state
from node.ledger.ledger import Ledger
from node.limits import Limits, Refusals, TokenBuckets, json_depth_ok, printable
from node.netdir import NetworkDir
from node.pbft import Replica
from node.pbft.checkpoint import replies_digest
from node.reads import (
    QUERY_KINDS,
    ReadRefused,
    Stable,
    answer,
    attest,
    build_receipt,
    check_read,
    executed_requests,
    permit,
    reader_role,
)
from node.storage import Storage

__all__ = ["MAX_BODY_BYTES", "NodeBackend", "build_app", "check_submission"]

log = logging.getLogger("medbft.api")

MAX_BODY_BYTES = 64 * 1024
MAX_WAIT_S = 30.0
MAX_LEDGER_LIMIT = 1000
MAX_DIGEST_LIMIT = 10_000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class NodeBackend(Protocol):
    """What the API serves: one running node. `node.server.NodeServer` is one; the API does
    not import it (the server imports the API)."""

    id: str
    net: NetworkDir
    replica: Replica
    storage: Storage

    def submit(self, envelope: bytes) -> None:
        """Hand a checked client request envelope to the replica."""

    async def wait_executed(self, key: str, timeout_s: float) -> int | None:
        """The seq at which request `key` executes here, or None after `timeout_s`."""

    def status(self) -> dict[str, Any]: ...

    def block_json(self, seq: int, raw: bytes) -> dict[str, Any]: ...


#: The refusal reason (`/metrics` `refused_total{reason=...}`) of an ApiError by status,
#: unless it names one.
REFUSAL_KINDS = {400: "bad-request", 401: "unauthenticated", 403: "forbidden", 404: "not-found",
                 405: "method-not-allowed", 408: "body-timeout", 413: "body-too-large",
                 415: "unsupported-media-type", 429: "rate-limited", 503: "unavailable",
                 504: "not-executed"}


class ApiError(Exception):
    """A request the API refuses: HTTP status, a one-line reason, the refusal kind counted in
    `/metrics` (by default from the status) and extra response headers."""

    def __init__(self, status: int, reason: str, kind: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.kind = kind or REFUSAL_KINDS.get(status, f"http-{status}")
        self.headers = headers


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": reason}, status=status, headers=headers)


def _errors(refusals: Refusals) -> Any:
    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every refusal as JSON with a reason (aiohttp's own 404/405/413 included), counted
        and logged as one line (method, route, peer; never the body)."""
        try:
            return await handler(request)
        except ApiError as exc:
            kind, resp = exc.kind, _error(exc.status, exc.reason, exc.headers)
        except web.HTTPRequestEntityTooLarge:
            kind, resp = "body-too-large", _error(413, f"body larger than {MAX_BODY_BYTES} bytes")
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            kind = REFUSAL_KINDS.get(exc.status, f"http-{exc.status}")
            resp = _error(exc.status, exc.reason)
        if resp.status == 408:
            resp.force_close()
        refusals.refuse(kind, f"{resp.status} {request.method} {printable(request.path)} "
                              f"from {request.remote}")
        return resp

    return errors


def _guard(limits: Limits) -> Any:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Read any body within the body timeout, and bound a JSON body's nesting before
        anything parses it (`request.read()` caches, so handlers read it again for free)."""
        if request.body_exists:
            try:
                body = await asyncio.wait_for(request.read(), limits.body_timeout_s)
            except TimeoutError as exc:
                raise ApiError(408, f"body not received within {limits.body_timeout_s:g} s"
                               ) from exc
            if request.content_type == "application/json" and \
                    not json_depth_ok(body, limits.max_json_depth):
                raise ApiError(400, f"JSON nested deeper than {limits.max_json_depth}",
                               "too-deep")
        return await handler(request)

    return guard


def build_app(server: NodeBackend, limits: Limits | None = None,
              refusals: Refusals | None = None) -> web.Application:
    """The aiohttp application serving `server`'s API, under `limits` (defaults if None);
    refusals are counted in `refusals`."""
    limits = limits or Limits()
    refusals = refusals if refusals is not None else Refusals(lines_per_s=limits.log_per_s)
    app = web.Application(client_max_size=MAX_BODY_BYTES,
                          middlewares=[_errors(refusals), _guard(limits)])
    api = _Api(server, limits)
    app.router.add_get("/", api.index)
    app.router.add_post("/tx", api.submit)
    app.router.add_get("/ledger", api.ledger)
    app.router.add_get("/state", api.state)
    app.router.add_get("/state/{key}", api.state_key)
    app.router.add_get("/query/{kind}", api.query)
    app.router.add_get("/checkpoint", api.checkpoint)
    app.router.add_get("/status", api.status)
    app.router.add_get("/metrics", api.metrics)
    return app


def check_submission(server: NodeBackend, raw: bytes) -> tuple[bytes, m.Request]:
    """Decode and check a submitted request; return (envelope bytes, request). Raises
    ApiError (400 malformed, 403 unknown client or bad signature)."""
    try:
        msg = m.decode(raw)
        if type(msg) is m.Envelope:
            envelope, req = raw, m.decode(msg.payload)
            sender = msg.sender
        else:
            req, sender = msg, getattr(msg, "client", "")
            envelope = m.encode(m.Envelope(sender, raw, b""))
    except m.DecodeError as exc:
        raise ApiError(400, f"malformed request: {exc}") from exc
    if type(req) is not m.Request:
        raise ApiError(400, f"expected a REQUEST, got {type(req).__name__}")
    if sender != req.client:
        raise ApiError(400, "envelope sender does not match the request's client")
    if req.client not in {c.id for c in server.net.membership.clients}:
        raise ApiError(403, f"unknown client {req.client!r}")
    if not server.replica.keys.verify(req.client, req.unsigned(), req.signature):
        raise ApiError(403, "bad request signature")
    return envelope, req


class _Api:
    def __init__(self, server: NodeBackend, limits: Limits) -> None:
        self.server = server
        self.limits = limits
        self.buckets = TokenBuckets(limits.rate_per_s, limits.rate_burst)
        self.refused: dict[str, int] = {}
        """Submissions refused at admission, by rule."""

    async def index(self, request: web.Request) -> web.Response:
        return web.json_response({"node": self.server.id, "endpoints": [
            "POST /tx", "GET /ledger", "GET /state", "GET /state/{key}", "GET /query/{kind}",
            "GET /checkpoint", "GET /status", "GET /metrics"]})

    def _reader(self, request: web.Request, what: str) -> tuple[str, str]:
        """The authenticated reader and role of a read of `what` (ApiError 401/403)."""
        r = self.server.replica
        try:
            party = check_read(r.keys, request.headers, request.method, request.raw_path)
            role = reader_role(self.server.net.membership, r.sm, party)
            permit(role, what)
        except ReadRefused as exc:
            raise ApiError(exc.status, exc.reason) from None
        return party, role

    def _open(self, request: web.Request) -> None:
        if not self.server.net.settings.get("api", {}).get("open_status", True):
            self._reader(request, "state")

    async def _body(self, request: web.Request) -> bytes:
        body = await request.read()
        ctype = request.content_type
        if ctype == "application/json":
            try:
                obj = json.loads(body)
                text = obj.get("envelope") or obj.get("request")
                if not isinstance(text, str):
                    raise TypeError("expected {\"envelope\": \"<hex>\"} or {\"request\": ...}")
                return bytes.fromhex(text)
            except (ValueError, TypeError, AttributeError, RecursionError) as exc:
                raise ApiError(400, f"malformed JSON body: {type(exc).__name__}"
                               if isinstance(exc, RecursionError) else
                               f"malformed JSON body: {exc}") from exc
        if ctype not in ("application/octet-stream", ""):
            raise ApiError(415, f"content type {ctype!r}: send application/octet-stream or "
                                f"application/json")
        if not body:
            raise ApiError(400, "empty body")
        return body

    async def submit(self, request: web.Request) -> web.Response:
        wait_s = _float_param(request, "wait", 0.0, 0.0, MAX_WAIT_S)
        envelope, req = check_submission(self.server, await self._body(request))
        key = f"{req.client}/{req.session}/{req.timestamp}"
        retry_s = self.buckets.take(req.client)
        if retry_s > 0:
            raise ApiError(429, f"over {self.limits.rate_per_s:g} requests/s for "
                                f"{req.client}", headers={"Retry-After": str(math.ceil(retry_s))})
        cached = self.server.replica.replies.get((req.client, req.session))
        if wait_s > 0 and cached is not None and cached.timestamp == req.timestamp:
            # A replay of an executed request: the reply cache answers (seq not kept there),
            # once what produced it is durable, as for a waited request.
            self.server.storage.commit()
            return web.json_response({"key": key, "status": "executed", "seq": None,
                                      "replayed": True,
                                      "result": cached.result.decode(errors="replace"),
                                      "result_hex": cached.result.hex()})
        rule = self.server.replica.sm.admissible(req.op)
        if rule is not None:  # never reaches the replica, a block or a disk
            self.refused[rule] = self.refused.get(rule, 0) + 1
            log.info("refused %s at admission: %s", key, rule)
            return web.json_response({"error": f"inadmissible transaction: {rule}",
                                      "rule": rule, "key": key}, status=422)
        if wait_s <= 0:
            self.server.submit(envelope)
            return web.json_response({"key": key, "status": "submitted"}, status=202)
        waiting = self.server.wait_executed(key, wait_s)
        self.server.submit(envelope)
        seq = await waiting
        if seq is None:
            raise ApiError(504, f"not executed here within {wait_s:g} s")
        cached = self.server.replica.replies.get((req.client, req.session))
        result = cached.result if cached is not None and cached.timestamp == req.timestamp \
            else b""
        return web.json_response({"key": key, "status": "executed", "seq": seq,
                                  "block": _block_at(self.server.replica.sm, seq),
                                  "result": result.decode(errors="replace"),
                                  "result_hex": result.hex()})

    async def ledger(self, request: web.Request) -> web.Response:
        self._reader(request, "ledger")
        start = _int_param(request, "start", 1, 1, 2**62)
        server = self.server
        server.storage.commit()
        last = server.replica.last_executed
        missing = [list(r) for r in server.storage.missing(last)]
        if request.query.get("digests") in ("1", "true"):
            limit = _int_param(request, "limit", 1000, 1, MAX_DIGEST_LIMIT)
            return web.json_response({"node": server.id, "last_executed": last,
                                      "missing": missing, "digests": [
                                          [seq, d.hex()] for seq, d in
                                          server.storage.digests(start, limit)]})
        limit = _int_param(request, "limit", 100, 1, MAX_LEDGER_LIMIT)
        if request.query.get("raw") in ("1", "true"):  # encoded blocks, for back-filling peers
            return web.json_response({"node": server.id, "last_executed": last,
                                      "missing": missing, "blocks": [
                                          {"seq": seq, "raw": raw.hex()} for seq, raw in
                                          server.storage.blocks(start, limit)]})
        blocks = [server.block_json(seq, raw) for seq, raw in server.storage.blocks(start, limit)]
        return web.json_response({"node": server.id, "last_executed": last,
                                  "missing": missing, "blocks": blocks})

    async def state(self, request: web.Request) -> web.Response:
        self._reader(request, "state")
        r = self.server.replica
        body: dict[str, object] = {"node": self.server.id, "last_executed": r.last_executed,
                                   "state_machine": self.server.net.state_machine,
                                   "digest": r.sm.digest().hex()}
        summary = getattr(r.sm, "summary", None)
        if callable(summary):
            body["ledger"] = summary()
        return web.json_response(body)

    async def state_key(self, request: web.Request) -> web.Response:
        self._reader(request, "ledger")
        key = request.match_info["key"]
        found, value = query_state(self.server.replica.sm, key)
        if not found:
            raise ApiError(404, f"no state entry {key!r}")
        return web.json_response({"key": key, "value": value,
                                  "last_executed": self.server.replica.last_executed})

    async def checkpoint(self, request: web.Request) -> web.Response:
        self._reader(request, "state")
        cps = self.server.replica.checkpoints
        return web.json_response({"node": self.server.id, "seq": cps.stable_seq,
                                  "held": cps.holds_stable, "proof": [
                                      {"seq": cp.seq, "digest": cp.digest.hex(),
                                       "replica": cp.replica, "signature": cp.signature.hex()}
                                      for cp in cps.stable_proof]})

    def _block_txs(self, height: int) -> list[m.Request]:
        ledger = self.server.replica.sm
        assert isinstance(ledger, Ledger)
        seq = ledger.state.blocks.entries[height - 1][1]
        self.server.storage.commit()
        for s, raw in self.server.storage.blocks(seq, 1):
            if s == seq:
                cb = m.decode(raw)
                if type(cb) is m.CommittedBatch:
                    return executed_requests(ledger, height, cb.batch)
        raise ReadRefused(503, f"block {height} (seq {seq}) is not stored here (back-filling)")

    async def query(self, request: web.Request) -> web.Response:
        """A ledger query's answer with a receipt, signed by this node."""
        kind = request.match_info["kind"]
        party, role = self._reader(request, kind if kind in QUERY_KINDS else "blocks")
        wait_s = _float_param(request, "wait", 0.0, 0.0, MAX_WAIT_S)
        server = self.server
        sm = server.replica.sm
        if not isinstance(sm, Ledger):
            raise ApiError(404, "this network runs no ledger")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            try:
                q, ans = answer(sm, kind, dict(request.query), party, role, self._block_txs)
                cps = server.replica.checkpoints
                if cps.stable_replies is None:
                    raise ReadRefused(503, "the stable checkpoint's state is not held here")
                stable = Stable(cps.stable_seq, cps.stable_proof,
                                replies_digest(cps.stable_replies))
                receipt = build_receipt(sm, server.net.network_id, party, q, ans, stable,
                                        self._block_txs)
                break
            except ReadRefused as exc:
                if exc.status != 503 or loop.time() >= deadline:
                    raise ApiError(exc.status, exc.reason) from None
            await asyncio.sleep(0.1)
        receipt["attestations"] = [attest(server.replica.keys, server.net.network_id, party,
                                          q, ans)]
        return web.json_response({"node": server.id, "receipt": receipt},
                                 dumps=_dumps)

    def _status(self) -> dict[str, Any]:
        status = self.server.status()
        status["counters"]["refused_at_api"] = dict(sorted(self.refused.items()))
        return status

    async def status(self, request: web.Request) -> web.Response:
        self._open(request)
        return web.json_response(self._status())

    async def metrics(self, request: web.Request) -> web.Response:
        self._open(request)
        return web.Response(text=prometheus_text(self._status()),
                            content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Format": "prometheus-0.0.4"})


def _block_at(sm: object, seq: int) -> int | None:
    """The height of a ledger's block for batch `seq` (None: no ledger, or not found)."""
    if not isinstance(sm, Ledger):
        return None
    entries = sm.state.blocks.entries
    for i in range(len(entries) - 1, max(-1, len(entries) - 10_000), -1):
        if entries[i][1] == seq:
            return i + 1
        if entries[i][1] < seq:
            break
    return None


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError as exc:
        raise ApiError(400, f"{name} must be an integer; got {text!r}") from exc
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low} and {high}; got {value}")
    return value


def _float_param(request: web.Request, name: str, default: float, low: float,
                 high: float) -> float:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError as exc:
        raise ApiError(400, f"{name} must be a number of seconds; got {text!r}") from exc
    if not math.isfinite(value) or not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low:g} and {high:g}; got {text}")
    return value


# -- Prometheus -------------------------------------------------------------------------------


def _labels(labels: dict[str, Any]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def prometheus_text(status: dict[str, Any]) -> str:
    """Render a node's status as Prometheus text exposition format (version 0.0.4)."""
    node = {"node": status["id"]}
    c = status["counters"]
    out: list[str] = []

    def metric(name: str, kind: str, help_text: str,
               samples: list[tuple[dict[str, Any], float]]) -> None:
        out.append(f"# HELP medbft_{name} {help_text}")
        out.append(f"# TYPE medbft_{name} {kind}")
        for labels, value in samples:
            out.append(f"medbft_{name}{_labels({**node, **labels})} {value}")

    metric("view", "gauge", "Current view.", [({}, status["view"])])
    metric("view_active", "gauge", "1 when the view is active (not changing views).",
           [({}, int(status["view_active"]))])
    metric("is_primary", "gauge", "1 when this node is the primary of its view.",
           [({}, int(status["primary"] == status["id"]))])
    metric("last_executed", "gauge", "Sequence number of the last executed batch.",
           [({}, status["last_executed"])])
    metric("stable_checkpoint", "gauge", "Sequence number of the stable checkpoint.",
           [({}, status["stable_checkpoint"])])
    metric("pending_requests", "gauge", "Requests received and not yet ordered.",
           [({}, status["pending_requests"])])
    metric("executed_requests_total", "counter", "Client requests executed.",
           [({}, c["executed_requests"])])
    metric("messages_sent_total", "counter", "Protocol messages sent, by type.",
           [({"type": k}, v) for k, v in c["sent_by_kind"].items()])
    metric("bytes_sent_total", "counter", "Protocol bytes sent, by message type.",
           [({"type": k}, v) for k, v in c["sent_bytes_by_kind"].items()])
    metric("messages_received_total", "counter", "Protocol messages received.",
           [({}, c["messages_received"])])
    metric("frames_total", "counter", "Transport frames, by direction.",
           [({"direction": "sent"}, c["frames_sent"]),
            ({"direction": "received"}, c["frames_received"]),
            ({"direction": "malformed"}, c["bad_frames"])])
    metric("transport_dropped_total", "counter", "Frames the transport could not send.",
           [({"reason": "no route"}, c["dropped_no_route"]),
            ({"reason": "queue full"}, c["dropped_queue_full"])])
    metric("rejected_messages_total", "counter",
           "Messages rejected as forged or malformed, by reason.",
           [({"reason": k}, v) for k, v in c["rejected"].items()])
    metric("refused_total", "counter", "Connections, requests and hellos the listener "
           "refused (limits, malformed input), by reason.",
           [({"reason": k}, v) for k, v in c.get("refused", {}).items()])
    metric("ignored_messages_total", "counter", "Stale or duplicate messages, by reason.",
           [({"reason": k}, v) for k, v in c["ignored"].items()])
    metric("refused_at_api_total", "counter",
           "Submissions refused at admission by the API (never ordered), by rule.",
           [({"rule": k}, v) for k, v in c.get("refused_at_api", {}).items()])
    metric("protocol_events_total", "counter", "Protocol trace events, by event.",
           [({"event": k}, v) for k, v in c["events"].items()])
    metric("storage_commits_total", "counter", "SQLite transactions committed.",
           [({}, c["storage_commits"])])
    metric("peer_connected", "gauge", "1 when the link to a peer (or broker) is up.",
           [({"peer": p}, int(bool(s.get("connected")))) for p, s in status["peers"].items()])
    metric("uptime_seconds", "gauge", "Seconds since the node started.",
           [({}, status["uptime_s"])])
    return "\n".join(out) + "\n"
