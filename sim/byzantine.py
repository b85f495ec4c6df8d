"""Byzantine behaviours: wrappers that make an honest replica lie, stall, forge or go quiet.

Why this exists: PBFT's promise is about what f faulty replicas cannot do, so the simulator
must be able to make replicas faulty in the specific ways the literature worries about. Each
behaviour wraps an honest `Replica` (whose code stays honest and untouched) and rewrites what
goes in and out: the effects it returns and, for some, the events it sees. A shell has the
same face as a replica (`id`, `costs`, `step`), so the runtime cannot tell the difference.

Behaviours (scenario `behavior:` names):
- silent: receives, never sends.
- equivocate: as primary, proposes a different batch (same requests, another block timestamp,
  hence another digest) to different honest replicas for one sequence number; in any role,
  votes (PREPARE, COMMIT, VIEW-CHANGE claims) for the version each honest receiver was given.
  Replicas with this behaviour form a coalition: with f+1 of them the honest replicas are split
  in two groups that each reach a quorum with the coalition's votes (a fork the checker must
  catch); with fewer, every honest replica gets its own version, so none can prepare and a view
  change must follow.
- corrupt-digest: its PREPAREs and COMMITs carry wrong digests.
- forge: besides its honest traffic, sends forged copies: a bad MAC, another replica's name,
  a vote in another replica's name under its own MAC, a corrupted signature, a request with a
  forged client signature. Every one must be rejected.
- replay: every `every` (default 50 ms) re-sends a few of its old messages (earlier views and
  sequence numbers) to their original receivers.
- slow-primary {delay}: as primary, holds each PRE-PREPARE for `delay` (Aardvark: just under
  the view-change timeout, so throughput collapses without a view change).
- censor {clients}: as primary, drops those clients' requests instead of proposing them.
- premature-view-change {every}: asks for a view change every `every` (default 1 s) without
  cause (f such replicas alone cannot force one: f+1 are needed).

Behaviours that understand the healthcare ledger (they read transactions' `kind`; the harm they
aim at is measured by medbft/harm.py, not reported by the shell):
- censor-kind {kinds}: as primary, never proposes transactions of those kinds (e.g.
  RECALL_ISSUE): drops them when they arrive, from the client or relayed by a backup.
- front-run-revoke {hold}: as primary, holds each CONSENT_REVOKE it receives for `hold`
  (default half the view-change timeout) before taking it in, so accesses that arrive
  meanwhile are ordered first, under the consent being withdrawn.
- delay-regulator {delay, roles}: as primary, holds each PRE-PREPARE whose batch holds a
  transaction signed by a regulator's client (roles, default inspector, regulator_inspector
  and auditor) for `delay` (default 90% of the view-change timeout: just under it).
- false-reply {lies}: its REPLYs lie; a client needs f+1 matching replies, so it must never
  accept one from f such replicas. `lies` (default [permit]): `permit` says `permit:` where
  its ledger said `deny:`; `paid` says `ok:paid` to a claim adjudication its ledger did not
  pay; `released` says `ok:aggregate=1` where its ledger suppressed a research answer (every
  liar makes up the same count, so f+1 of them match).

What it must not know: the network model or the checker. Randomness comes from the seeded
`random.Random` it is given.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import deque
from typing import Any

from node import messages as m
from node.events import Effect, Event, Receive, Send, SetTimer, Timeout, Trace, sends
from node.messages import DecodeError
from node.pbft import Replica

__all__ = ["ByzantineShell", "Coalition"]

_PREFIX = "byz:"
REGULATOR_ROLES = ("inspector", "regulator_inspector", "auditor")


class Coalition:
    """What colluding replicas with one behaviour share: who is in, and the versions of each
    (view, seq) proposal handed to each honest replica."""

    def __init__(self, behavior: str, all_ids: tuple[str, ...], f: int) -> None:
        self.behavior = behavior
        self.all_ids = all_ids
        self.f = f
        self.members: set[str] = set()
        self.versions: dict[tuple[int, int], list[bytes]] = {}

    def join(self, node: str) -> None:
        self.members.add(node)

    def leave(self, node: str) -> None:
        self.members.discard(node)

    def honest(self) -> list[str]:
        return [i for i in self.all_ids if i not in self.members]

    def version_of(self, receiver: str) -> int:
        """Which version (0 = the original proposal) `receiver` is given."""
        honest = self.honest()
        if receiver not in honest:
            return 0
        index = honest.index(receiver)
        if len(self.members) > self.f:
            return 0 if index < (len(honest) + 1) // 2 else 1  # two groups: a fork
        return index  # everyone different: no quorum anywhere


class ByzantineShell:
    """Wraps an honest replica; `behavior` is the parsed scenario mapping {'name': ..., ...}."""

    def __init__(self, inner: Replica, behavior: dict[str, Any], coalition: Coalition,
                 rng: random.Random) -> None:
        self.inner = inner
        self.id = inner.id
        self.costs = inner.costs
        self.keys = inner.keys
        self.behavior = behavior
        self.name: str = behavior["name"]
        self.coalition = coalition
        self.rng = rng
        self.history: deque[Send] = deque(maxlen=256)
        self.held: dict[str, list[Effect]] = {}
        self.counter = 0
        self.forged = 0
        self.later: dict[str, Receive] = {}
        """front-run-revoke: requests held back from the replica, by timer key."""
        self.lies: tuple[str, ...] = tuple(behavior.get("lies") or ("permit",))
        self.adjudications: set[tuple[str, int, int]] = set()
        """false-reply `paid`: the claim adjudications this replica was sent (request keys),
        so their replies can be told apart (a refusal reads the same for other kinds)."""
        roles = set(behavior.get("roles") or REGULATOR_ROLES)
        self.regulators = {c.id for c in inner.membership.clients if c.role in roles}
        coalition.join(self.id)

    # -- the replica's face -------------------------------------------------------------------

    def start_effects(self) -> list[Effect]:
        """Timers the behaviour needs from the moment it is switched on."""
        every = self.behavior.get("every")
        if self.name == "replay":
            return [SetTimer(_PREFIX + "replay", every or 50_000_000)]
        if self.name == "premature-view-change":
            return [SetTimer(_PREFIX + "pvc", every or 1_000_000_000)]
        return []

    def stop(self, now_ns: int = 0) -> list[Effect]:
        """The behaviour ends: release held messages, leave the coalition."""
        self.coalition.leave(self.id)
        released = [eff for effs in self.held.values() for eff in effs]
        self.held.clear()
        # Requests held back re-enter the (now honest) replica; their timers then find nothing.
        for event in self.later.values():
            released += self.inner.step(event, now_ns)
        self.later.clear()
        return released

    def step(self, event: Event, now_ns: int) -> list[Effect]:
        if type(event) is Timeout and event.key.startswith(_PREFIX):
            return self._on_own_timer(event.key, now_ns)
        if self.name == "censor" and type(event) is Receive and self._censored(event.data):
            return [Trace("byzantine", {"behavior": "censor", "action": "dropped request"})]
        if self.name in ("censor-kind", "front-run-revoke") and type(event) is Receive:
            kind = self._request_kind(event.data)
            if kind is not None and self.name == "censor-kind" and kind in self.behavior[
                    "kinds"]:
                return [Trace("byzantine", {"behavior": self.name, "action": "dropped request",
                                            "tx_kind": kind})]
            if kind == "CONSENT_REVOKE" and self.name == "front-run-revoke":
                self.counter += 1
                key = f"{_PREFIX}later:{self.counter}"
                self.later[key] = event
                hold = self.behavior.get("hold") or self.inner.config.view_change_timeout_ns // 2
                return [SetTimer(key, hold),
                        Trace("byzantine", {"behavior": self.name, "action": "held revocation"})]
        if self.name == "false-reply" and "paid" in self.lies and type(event) is Receive:
            self._note_adjudications(event.data)
        return self._rewrite(self.inner.step(event, now_ns))

    # -- inputs -------------------------------------------------------------------------------

    def _censored(self, data: bytes) -> bool:
        if not self.inner.is_primary:
            return False
        req = self._request(data)
        return req is not None and req.client in self.behavior.get("clients", [])

    def _request(self, data: bytes) -> m.Request | None:
        """The client request `data` carries (from the client or relayed), else None."""
        try:
            env = m.decode(data)
            if type(env) is not m.Envelope or not env.payload or env.payload[0] != m.Request.TAG:
                return None
            req = m.decode(env.payload)
        except DecodeError:
            return None
        return req if isinstance(req, m.Request) else None

    def _note_adjudications(self, data: bytes) -> None:
        """Remember the CLAIM_ADJUDICATE requests in `data`: a request (from its client or
        relayed), a proposal's batch or a fetched batch, whichever way this replica learns of
        them."""
        try:
            env = m.decode(data)
            if type(env) is not m.Envelope or not env.payload:
                return
            tag = env.payload[0]
            if tag == m.Request.TAG:
                requests: tuple[m.Request, ...] = (m.decode(env.payload),)  # type: ignore
            elif tag in (m.PrePrepare.TAG, m.BatchData.TAG):
                msg = m.decode(env.payload)
                requests = msg.batch.requests if isinstance(msg, m.PrePrepare | m.BatchData) \
                    else ()
            else:
                return
        except DecodeError:
            return
        for req in requests:
            if isinstance(req, m.Request) and b"CLAIM_ADJUDICATE" in req.op:
                try:
                    tx = json.loads(req.op)
                except (ValueError, UnicodeDecodeError):
                    continue
                if isinstance(tx, dict) and tx.get("kind") == "CLAIM_ADJUDICATE":
                    self.adjudications.add((req.client, req.session, req.timestamp))

    def _request_kind(self, data: bytes) -> str | None:
        """The ledger transaction kind of a request reaching us as primary, else None."""
        if not self.inner.is_primary:
            return None
        req = self._request(data)
        if req is None:
            return None
        try:
            tx = json.loads(req.op)
        except (ValueError, UnicodeDecodeError):
            return None
        kind = tx.get("kind") if isinstance(tx, dict) else None
        return kind if isinstance(kind, str) else None

    def _on_own_timer(self, key: str, now_ns: int) -> list[Effect]:
        out: list[Effect] = []
        if key in self.later:
            event = self.later.pop(key)
            return [Trace("byzantine", {"behavior": self.name, "action": "released revocation"}),
                    *self._rewrite(self.inner.step(event, now_ns))]
        if key == _PREFIX + "replay":
            out += self._replay()
            out.append(SetTimer(key, self.behavior.get("every") or 50_000_000))
        elif key == _PREFIX + "pvc":
            # The replica believes its timer expired; the trace says whose decision it was.
            out += [Trace("view-change", {**eff.fields, "cause": "byzantine",
                                          "behavior": self.name})
                    if type(eff) is Trace and eff.event == "view-change" else eff
                    for eff in self.inner.step(Timeout("view-change"), now_ns)]
            out.append(Trace("byzantine", {"behavior": self.name, "action": "view change"}))
            out.append(SetTimer(key, self.behavior.get("every") or 1_000_000_000))
            out = self._rewrite(out)
        elif key.startswith(_PREFIX + "hold:"):
            out += self.held.pop(key, [])
        return out

    def _replay(self) -> list[Effect]:
        if not self.history:
            return []
        picks = [self.history[self.rng.randrange(len(self.history))] for _ in range(4)]
        return [*picks, Trace("byzantine", {"behavior": "replay", "action": "replayed",
                                            "count": len(picks)})]

    # -- outputs ------------------------------------------------------------------------------

    def _rewrite(self, effects: list[Effect]) -> list[Effect]:
        name = self.name
        out: list[Effect] = []
        for eff in sends(effects):  # behaviours act on each copy of a multicast
            if type(eff) is not Send:
                out.append(eff)
            elif name == "silent":
                continue
            elif name == "equivocate":
                out.append(self._equivocate(eff))
            elif name == "corrupt-digest":
                out.append(self._corrupt(eff))
            elif name == "forge":
                out += [eff, self._forge(eff)]
            elif name == "replay":
                self.history.append(eff)
                out.append(eff)
            elif name == "slow-primary" and eff.kind == "PRE-PREPARE":
                out += self._hold(eff)
            elif name == "delay-regulator" and eff.kind == "PRE-PREPARE" and self._regulated(eff):
                out += self._hold(eff, self.behavior.get("delay")
                                  or self.inner.config.view_change_timeout_ns * 9 // 10)
            elif name == "false-reply" and eff.kind == "REPLY":
                out += self._false_reply(eff)
            else:
                out.append(eff)
        return out

    def _open(self, eff: Send) -> tuple[m.Envelope, m.Message]:
        env = m.decode(eff.data)
        assert isinstance(env, m.Envelope)
        return env, m.decode(env.payload)

    def _seal(self, to: str, msg: m.Message, sender: str | None = None) -> Send:
        """A correctly MAC'd envelope for `msg` from us (or claiming `sender`, MAC'd by us)."""
        payload = m.encode(msg)
        name = sender or self.id
        mac = self.keys.mac(to, self.id.encode() + b"\x00" + payload)
        return Send(to, m.encode(m.Envelope(name, payload, mac)), msg.KIND)

    def _hold(self, eff: Send, delay: int | None = None) -> list[Effect]:
        self.counter += 1
        key = f"{_PREFIX}hold:{self.counter}"
        self.held[key] = [eff]
        return [SetTimer(key, delay if delay is not None else self.behavior["delay"])]

    def _regulated(self, eff: Send) -> bool:
        """Does this PRE-PREPARE's batch hold a regulator's transaction?"""
        _, msg = self._open(eff)
        return isinstance(msg, m.PrePrepare) and any(
            r.client in self.regulators for r in msg.batch.requests)

    def _false_reply(self, eff: Send) -> list[Effect]:
        """The reply as `lies` rewrite it (`deny:<rule>` becomes `permit:<rule>`, a claim
        adjudication not paid becomes `ok:paid`, `ok:suppressed` becomes a count); every
        other reply goes out as it was."""
        _, msg = self._open(eff)
        if not isinstance(msg, m.Reply):
            return [eff]
        result = msg.result
        if "permit" in self.lies and result.startswith(b"deny:"):
            lie = b"permit:" + result[len(b"deny:"):]
        elif "paid" in self.lies and result != b"ok:paid" and (
                msg.client, msg.session, msg.timestamp) in self.adjudications:
            lie = b"ok:paid"
        elif "released" in self.lies and result == b"ok:suppressed":
            lie = b"ok:aggregate=1"
        else:
            return [eff]
        forged = m.replace(msg, result=lie)
        return [self._seal(eff.to, forged),
                Trace("byzantine", {"behavior": self.name, "action": "false reply",
                                    "request": f"{msg.client}/{msg.session}/{msg.timestamp}"})]

    def _corrupt(self, eff: Send) -> Send:
        if eff.kind not in ("PREPARE", "COMMIT"):
            return eff
        _, msg = self._open(eff)
        assert isinstance(msg, m.Prepare | m.Commit)
        wrong = hashlib.sha256(msg.digest + b"corrupt").digest()
        return self._seal(eff.to, m.replace(msg, digest=wrong))

    def _forge(self, eff: Send) -> Send:
        """One forged copy of `eff`, cycling through the ways a message can be forged."""
        env, msg = self._open(eff)
        self.forged += 1
        way = self.forged % 5
        others = [i for i in self.inner.ids if i not in (self.id, eff.to)]
        victim = others[self.forged % len(others)] if others else self.id
        if way == 0:  # bad MAC
            bad = bytes([env.mac[0] ^ 0xFF]) + env.mac[1:] if env.mac else b"\x00" * 32
            return Send(eff.to, m.encode(m.Envelope(env.sender, env.payload, bad)), eff.kind)
        if way == 1:  # another replica's name, MAC'd with our key
            return self._seal(eff.to, msg, sender=victim)
        if way == 2 and hasattr(msg, "replica"):  # vote in another's name under our own MAC
            index = self.inner.ids.index(victim)
            return self._seal(eff.to, m.replace(msg, replica=index))  # type: ignore
        if way == 3 and hasattr(msg, "signature") and getattr(msg, "signature"):
            sig = getattr(msg, "signature")
            bad_sig = bytes([sig[0] ^ 0xFF]) + sig[1:]
            return self._seal(eff.to, m.replace(msg, signature=bad_sig))  # type: ignore
        req = m.Request(b"put forged 1", 10**9 + self.forged, self.inner.membership.clients[0].id
                        if self.inner.membership.clients else "client-1", 0, b"\x01" * 64)
        return self._seal(eff.to, req)

    def _equivocate(self, eff: Send) -> Send:
        coalition = self.coalition
        if eff.kind not in ("PRE-PREPARE", "PREPARE", "COMMIT", "VIEW-CHANGE"):
            return eff
        _, msg = self._open(eff)
        if isinstance(msg, m.PrePrepare):
            return self._equivocate_proposal(eff.to, msg)
        if isinstance(msg, m.ViewChange):
            return self._equivocate_view_change(eff.to, msg)
        assert isinstance(msg, m.Prepare | m.Commit)
        versions = coalition.versions.get((msg.view, msg.seq))
        if not versions:
            return eff
        digest = versions[min(coalition.version_of(eff.to), len(versions) - 1)]
        return eff if digest == msg.digest else self._seal(eff.to, m.replace(
            msg, digest=digest))

    def _equivocate_proposal(self, to: str, pp: m.PrePrepare) -> Send:
        key = (pp.view, pp.seq)
        versions = self.coalition.versions.setdefault(key, [pp.digest])
        version = self.coalition.version_of(to)
        while len(versions) <= version:
            alt = m.Batch(pp.batch.timestamp_ns + len(versions), pp.batch.requests)
            versions.append(alt.digest())
        if version == 0:
            return self._seal(to, pp)
        batch = m.Batch(pp.batch.timestamp_ns + version, pp.batch.requests)
        return self._seal(to, m.PrePrepare(pp.view, pp.seq, batch.digest(), batch))

    def _equivocate_view_change(self, to: str, vc: m.ViewChange) -> Send:
        version = self.coalition.version_of(to)
        if version == 0:
            return self._seal(to, vc)

        def swap(entry: m.SeqDigest) -> m.SeqDigest:
            versions = self.coalition.versions.get((entry.view, entry.seq))
            if not versions or len(versions) <= version:
                return entry
            return m.SeqDigest(entry.seq, versions[version], entry.view)

        changed = m.replace(vc, prepared=tuple(swap(e) for e in vc.prepared),
                            preprepared=tuple(swap(e) for e in vc.preprepared),
                            signature=b"")
        signed = m.replace(changed, signature=self.keys.sign(changed.unsigned()))
        return self._seal(to, signed)

