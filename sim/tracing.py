"""What a `send` row of a full trace says about the message it carries: its view, sequence
number, digest, the request it concerns.

Why this exists: a teacher (the sequence chart, the studio, the offline replay) must select a
request's messages exactly and see a fork: two versions of one sequence number sent by
equivocating replicas to different receivers. The transport sees only bytes, so with
`medbft run --trace` it decodes each message it sends (the exact bytes each receiver gets,
after any Byzantine rewrite) and copies these fields onto the row. Without `--trace` nothing
here runs. The trace format is documented in docs/results.md ("Trace format").

What it must not know: the network model, the replica's state. Digests are written as the
`execute` rows write them (full lowercase hex).
"""

from __future__ import annotations

import hashlib
from typing import Any

from node import messages as m
from node.client import Accepted
from node.envelope import open_envelope
from node.messages import DecodeError

__all__ = ["MessageFields", "accept_row"]


def _fields(msg: m.Message) -> dict[str, Any]:
    if isinstance(msg, m.PrePrepare | m.Prepare | m.Commit):
        return {"view": msg.view, "seq": msg.seq, "digest": msg.digest.hex()}
    if isinstance(msg, m.Request):
        return _request(msg.client, msg.session, msg.timestamp)
    if isinstance(msg, m.Reply):
        return {"view": msg.view, **_request(msg.client, msg.session, msg.timestamp),
                "result": result_digest(msg.result)}
    if isinstance(msg, m.Checkpoint):
        return {"seq": msg.seq, "digest": msg.digest.hex()}
    if isinstance(msg, m.ViewChange | m.NewView):
        return {"view": msg.view}
    return {}


def _request(client: str, session: int, timestamp: int) -> dict[str, Any]:
    """The request's key as requests.csv and `pre-prepare` rows spell it, and its parts."""
    return {"client": client, "session": session, "timestamp": timestamp,
            "request": f"{client}/{session}/{timestamp}"}


def result_digest(result: bytes) -> str:
    """A REPLY's result as the trace shows it: SHA-256, hex (results may be long)."""
    return hashlib.sha256(result).hexdigest()


def accept_row(t_ns: int, client: str, accepted: Accepted) -> dict[str, Any]:
    """The `accept` row: `client` accepted a result, `replies` matching REPLYs (f+1)."""
    return {"t": t_ns, "node": client, "event": "accept",
            **_request(client, accepted.session, accepted.timestamp),
            "view": accepted.view, "replies": accepted.replies,
            "result": result_digest(accepted.result)}


class MessageFields:
    """Envelope bytes -> the trace fields of the message inside. The copies of a multicast
    share one payload (only their MACs differ), so the last payload's fields are kept."""

    def __init__(self) -> None:
        self._payload = b""
        self._fields: dict[str, Any] = {}

    def __call__(self, data: bytes) -> dict[str, Any]:
        try:
            _, payload, _ = open_envelope(data)
            if payload == self._payload:
                return self._fields
            fields = _fields(m.decode(payload))
        except DecodeError:
            return {}  # a forged or corrupted message: the row says only what was sent
        self._payload, self._fields = payload, fields
        return fields
