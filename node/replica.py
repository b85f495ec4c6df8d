"""The PBFT replica as a sans-I/O state machine: `Replica.step(event, now_ns) -> [Effect]`.

Why this exists: it is the one place where Castro & Liskov's protocol (OSDI '99 §4, with the
view-change decision procedure of TOCS 2002 §4.5) is implemented. Runtimes wrap it: the
simulator on virtual time, the real node on asyncio sockets. It owns every protocol state
transition; nothing else changes its fields.

Rules of this module:
- No I/O, no clock, no global random. Time arrives with each event; output leaves as effects.
  The replicated state machine is called directly: it is deterministic and pure, so the reply
  and the checkpoint digest can follow in the same step.
- Every handler starts with a guard `_ignore_x(...) -> str | None` that says *why* a message
  is ignored; the reason is counted in `self.dropped` and traced.
- Untrusted input never raises: a malformed, forged or misdirected message is dropped and
  counted. Our own bugs do raise (assertions on invariants).
- Everything is bounded: the log by the watermark window, buffers and fetch sets by limits.

Replica ids inside messages are indices 0..n-1 into the membership; the primary of view v is
v mod n.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from node import messages as m
from node.crypto import Keyring
from node.events import (
    CancelTimer,
    Effect,
    Event,
    Persist,
    Receive,
    Send,
    SetTimer,
    Start,
    Timeout,
    Trace,
)
from node.membership import Membership
from node.messages import DecodeError, Message
from node.quorum import primary_of
from node.statemachine import BlockInfo, StateMachine

__all__ = ["Config", "Replica", "decide_new_view"]

NULL_DIGEST = m.NULL_BATCH.digest()
_T_BATCH = "batch"
_T_VIEW_CHANGE = "view-change"
_T_FETCH = "fetch"
_T_CATCH_UP = "catch-up"
_T_RETRANSMIT = "retransmit"
_MAX_BACKOFF_SHIFT = 4
"""The view-change timeout doubles per failed attempt (§4.5.2) up to 16T. Unbounded doubling
lets a replica that raced ahead into a higher view (after a partition, say) wait minutes for
the others to reach it while f Byzantine replicas withhold their votes; practical systems
(BFT-SMaRt among them) bound the backoff the same way."""

BENIGN_DROPS = frozenset({
    "old view", "below low watermark", "buffered", "buffer full", "duplicate pre-prepare",
    "request older than last reply", "old view-change", "old new-view", "pending requests full",
    "checkpoint at a non-checkpoint sequence number",
})
"""Drop reasons that honest traffic produces (late, duplicate or early messages)."""


@dataclass(frozen=True)
class Config:
    """Protocol parameters (names as in the scenario file's `protocol:` block)."""

    batch_size: int = 1
    batch_timeout_ns: int = 0
    max_in_flight: int = 16
    checkpoint_interval: int = 128
    watermark_window: int = 256
    view_change_timeout_ns: int = 500_000_000
    fetch_timeout_ns: int = 100_000_000
    retransmit_timeout_ns: int = 100_000_000
    max_pending_requests: int = 100_000
    max_buffered_messages: int = 8192
    durable: bool = False
    """Emit `Persist` effects (real mode); the simulator keeps state in memory instead."""

    def __post_init__(self) -> None:
        assert self.batch_size >= 1
        assert self.max_in_flight >= 1
        assert self.checkpoint_interval >= 1
        assert self.watermark_window >= self.checkpoint_interval


@dataclass(slots=True)
class Slot:
    """What one replica knows about one sequence number in the current view."""

    view: int = -1
    digest: bytes = b""
    pre_prepared: bool = False
    prepares: dict[int, bytes] = field(default_factory=dict)
    commits: dict[int, bytes] = field(default_factory=dict)
    prepared: bool = False
    committed: bool = False


@dataclass(frozen=True, slots=True)
class CachedReply:
    """The last reply to one client session: part of the replicated (checkpointed) state, so
    it holds nothing replica-specific. Replies carry the sender's current view (§4.1: so
    clients learn the primary), not the view of execution, which replicas may disagree on."""

    timestamp: int
    result: bytes


class Replica:
    """One PBFT replica. Construct it, feed `step`, carry out the effects it returns."""

    def __init__(
        self,
        membership: Membership,
        replica_id: str,
        keyring: Keyring,
        state_machine: StateMachine,
        config: Config | None = None,
    ) -> None:
        index = membership.index_of(replica_id)
        if index is None:
            raise ValueError(f"{replica_id!r} is not a replica of this membership")
        assert keyring.id == replica_id
        self.membership = membership
        self.config = config or Config()
        self.keys = keyring
        self.costs = keyring.costs
        self.sm = state_machine
        self.id = replica_id
        self.me = index
        self.n = membership.n
        self.f = membership.f
        self.q = membership.q
        self.ids = membership.node_ids
        self.client_ids = frozenset(c.id for c in membership.clients)
        self._out: list[Effect] = []
        self._env_prefix = m.envelope_prefix(replica_id)
        self._mac_prefix = replica_id.encode() + b"\x00"
        self.now_ns = 0
        # view
        self.view = 0
        self.view_active = True
        self.latest_new_view: m.NewView | None = None
        self.view_changes: dict[int, dict[int, m.ViewChange]] = {}
        self.vc_attempts = 0
        self.new_view_timeout_ns = self.config.view_change_timeout_ns
        # log and agreement
        self.h = 0
        self.next_seq = 1
        self.log: dict[int, Slot] = {}
        self.batches: dict[bytes, m.Batch] = {NULL_DIGEST: m.NULL_BATCH}
        self.prepared_info: dict[int, m.SeqDigest] = {}
        self.preprepared_info: dict[int, dict[bytes, int]] = {}
        self.commit_progress: dict[int, int] = {}
        self.last_block_ts = 0
        # execution
        self.last_executed = 0
        self.executed: dict[int, m.CommittedBatch] = {}
        self.replies: dict[tuple[str, int], CachedReply] = {}
        # checkpoints
        self.checkpoints: dict[int, dict[int, m.Checkpoint]] = {}
        self.own_checkpoints: dict[int, bytes] = {}
        self.stable_proof: tuple[m.Checkpoint, ...] = ()
        self.stable_snapshot: bytes | None = self._snapshot()
        # requests
        self.pending: dict[tuple[str, int, int], m.Request] = {}
        self.ordered: dict[tuple[str, int, int], int] = {}
        self.waiting: dict[tuple[str, int, int], None] = {}
        # catching up
        self.future: list[tuple[int, Message]] = []
        self.buffered_by: dict[int, int] = {}
        self.ahead_of_us: dict[int, tuple[int, bool]] = {}
        self.hinted: dict[int, tuple[int, int]] = {}  # peer -> (NEW-VIEW view sent, when)
        self.missing_batches: dict[bytes, int] = {}
        self.fetching_state = False
        self.catch_up_tried = False
        self.timed_request: tuple[str, int, int] | None = None
        self.timer_mark = 0
        self.stuck_seq = 0
        self.fetch_mark = 0
        self.transferred = 0
        self.transfer_votes: dict[int, dict[bytes, set[int]]] = {}
        self.transfer_bodies: dict[bytes, tuple[int, int, m.Batch]] = {}
        # counters (read by metrics)
        self.dropped: dict[str, int] = {}
        self.timers: set[str] = set()
        self._persist: list[Effect] = []
        self._votes_dirty = False

    # =========================================================================================
    # Entry point

    def step(self, event: Event, now_ns: int) -> list[Effect]:
        """Feed one event at time `now_ns`; return the effects to carry out, in order."""
        self.now_ns = now_ns
        out: list[Effect] = []
        self._out = out
        if type(event) is Receive:
            self._on_receive(event.data)
        elif type(event) is Timeout:
            self.timers.discard(event.key)
            self._on_timeout(event.key)
        elif type(event) is Start:
            self._on_start(event.recovering)
        else:
            raise TypeError(f"unknown event {event!r}")
        self._out = []
        if self.config.durable:
            if self._votes_dirty:
                self._persist.append(Persist("votes", self._votes_record()))
                self._votes_dirty = False
            if self._persist:
                out[:0] = self._persist
                self._persist = []
        return out

    @property
    def primary(self) -> int:
        return primary_of(self.view, self.n)

    @property
    def is_primary(self) -> bool:
        return self.primary == self.me

    @property
    def high_watermark(self) -> int:
        return self.h + self.config.watermark_window

    # =========================================================================================
    # Output helpers

    def _trace(self, event: str, **fields: Any) -> None:
        self._out.append(Trace(event, fields))

    def _drop(self, reason: str, sender: str = "", kind: str = "") -> None:
        """Count and trace an ignored message. `bad` marks reasons only a faulty or forged
        message can have; the rest (stale, duplicate, early) happen to honest traffic too."""
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self._out.append(Trace("drop", {"reason": reason, "from": sender, "kind": kind,
                                        "bad": reason not in BENIGN_DROPS}))

    def _envelope(self, to: str, payload: bytes) -> bytes:
        mac = self.keys.mac(to, self._mac_prefix + payload)
        return m.seal_envelope(self._env_prefix, payload, mac)

    def _send(self, to: int | str, msg: Message) -> None:
        to_id = self.ids[to] if isinstance(to, int) else to
        self._out.append(Send(to_id, self._envelope(to_id, m.encode(msg)), msg.KIND))

    def _bcast(self, msg: Message) -> None:
        """Multicast to every other replica (point-to-point sends, one MAC each)."""
        payload = m.encode(msg)
        kind = msg.KIND
        out = self._out
        for i, to_id in enumerate(self.ids):
            if i != self.me:
                out.append(Send(to_id, self._envelope(to_id, payload), kind))

    def _set_timer(self, key: str, delay_ns: int) -> None:
        self.timers.add(key)
        self._out.append(SetTimer(key, delay_ns))

    def _cancel_timer(self, key: str) -> None:
        if key in self.timers:
            self.timers.discard(key)
            self._out.append(CancelTimer(key))

    # =========================================================================================
    # Receiving: decode, authenticate, dispatch

    def _on_receive(self, data: bytes) -> None:
        self.costs.messages += 1
        self.costs.bytes += len(data)
        try:
            sender, payload, mac = m.open_envelope(data)
            msg = m.decode(payload)
        except DecodeError:
            self._drop("malformed")
            return
        if type(msg) is m.Request:
            self._on_request_envelope(sender, payload, mac, msg)
            return
        index = self.membership.index_of(sender)
        if index is None or index == self.me:
            self._drop("unknown sender", sender, msg.KIND)
            return
        if not self.keys.check_mac(sender, sender.encode() + b"\x00" + payload, mac):
            self._drop("bad MAC", sender, msg.KIND)
            return
        claimed = getattr(msg, "replica", index)
        if claimed != index and type(msg) is not m.NewView:
            self._drop("replica field does not match sender", sender, msg.KIND)
            return
        self._dispatch(index, msg)

    def _dispatch(self, sender: int, msg: Message) -> None:
        kind = type(msg)
        if kind is m.PrePrepare:
            self._on_pre_prepare(sender, msg)  # type: ignore[arg-type]
        elif kind is m.Prepare:
            self._on_prepare(sender, msg)  # type: ignore[arg-type]
        elif kind is m.Commit:
            self._on_commit(sender, msg)  # type: ignore[arg-type]
        elif kind is m.Checkpoint:
            self._on_checkpoint(sender, msg)  # type: ignore[arg-type]
        elif kind is m.ViewChange:
            self._on_view_change(sender, msg)  # type: ignore[arg-type]
        elif kind is m.NewView:
            self._on_new_view(sender, msg)  # type: ignore[arg-type]
        elif kind is m.FetchBatch:
            self._on_fetch_batch(sender, msg)  # type: ignore[arg-type]
        elif kind is m.BatchData:
            self._on_batch_data(sender, msg)  # type: ignore[arg-type]
        elif kind is m.FetchState:
            self._on_fetch_state(sender, msg)  # type: ignore[arg-type]
        elif kind is m.StateData:
            self._on_state_data(sender, msg)  # type: ignore[arg-type]
        else:
            self._drop("unexpected message type", self.ids[sender], msg.KIND)

    def _on_request_envelope(self, sender: str, payload: bytes, mac: bytes,
                             req: m.Request) -> None:
        from_client = sender in self.client_ids
        if from_client:
            if req.client != sender:
                self._drop("request client does not match sender", sender, req.KIND)
                return
        else:
            index = self.membership.index_of(sender)
            if index is None or index == self.me:
                self._drop("unknown sender", sender, req.KIND)
                return
            if not self.keys.check_mac(sender, sender.encode() + b"\x00" + payload, mac):
                self._drop("bad MAC", sender, req.KIND)
                return
        self._on_request(req, from_client)

    # =========================================================================================
    # Client requests (§4.1)

    def _valid_request(self, req: m.Request) -> bool:
        return req.client in self.client_ids and self.keys.verify(
            req.client, req.unsigned(), req.signature
        )

    def _ignore_request(self, req: m.Request) -> str | None:
        if not self._valid_request(req):
            return "bad request signature"
        cached = self.replies.get((req.client, req.session))
        if cached is not None and req.timestamp < cached.timestamp:
            return "request older than last reply"
        return None

    def _on_request(self, req: m.Request, from_client: bool) -> None:
        reason = self._ignore_request(req)
        if reason:
            self._drop(reason, req.client, req.KIND)
            return
        cached = self.replies.get((req.client, req.session))
        if cached is not None and cached.timestamp == req.timestamp:
            # Already executed: answer again from the reply cache (exactly-once, §4.1).
            self._send_reply(req.client, req.session, cached)
            return
        key = req.key
        if key in self.ordered or key in self.pending:
            if from_client and not self.is_primary:
                # A retransmission of a request we know but have not executed: the client
                # is still waiting, so we wait (and time out) too (§4.4).
                self._wait_for(key)
            return
        if len(self.pending) >= self.config.max_pending_requests:
            self._drop("pending requests full", req.client, req.KIND)
            return
        self.pending[key] = req
        if self.is_primary and self.view_active:
            self._maybe_propose()
        elif from_client:
            # §4.4: a backup relays a retransmitted request to the primary and starts its timer.
            if self.view_active:
                self._send(self.primary, req)
            self._wait_for(key)

    def _send_reply(self, client: str, session: int, cached: CachedReply) -> None:
        reply = m.Reply(self.view, cached.timestamp, client, session, self.me, cached.result)
        self._send(client, reply)

    # =========================================================================================
    # Normal case: pre-prepare, prepare, commit (§4.2)

    def _in_flight(self) -> int:
        return self.next_seq - 1 - self.last_executed

    def _maybe_propose(self) -> None:
        """Primary: turn pending requests into batches while the window and in-flight bound
        allow (§4.2 batching: buffer while too many batches are in progress)."""
        cfg = self.config
        while (
            self.pending
            and self._in_flight() < cfg.max_in_flight
            and self.next_seq <= self.high_watermark
        ):
            if len(self.pending) < cfg.batch_size and cfg.batch_timeout_ns > 0:
                if _T_BATCH not in self.timers:
                    self._set_timer(_T_BATCH, cfg.batch_timeout_ns)
                return
            self._propose(self._take_pending(cfg.batch_size))
        if not self.pending:
            self._cancel_timer(_T_BATCH)

    def _take_pending(self, limit: int) -> list[m.Request]:
        reqs: list[m.Request] = []
        for key in list(self.pending):
            if len(reqs) >= limit:
                break
            reqs.append(self.pending.pop(key))
        return reqs

    def _propose(self, reqs: list[m.Request]) -> None:
        seq = self.next_seq
        self.next_seq += 1
        self.last_block_ts = max(self.last_block_ts, self.now_ns)
        batch = m.Batch(self.last_block_ts, tuple(reqs))
        digest = batch.digest()
        self.costs.digest += 1
        self.batches[digest] = batch
        slot = self._slot(seq)
        slot.view, slot.digest, slot.pre_prepared = self.view, digest, True
        self._note_preprepared(seq, digest, self.view)
        for req in reqs:
            self.ordered[req.key] = seq
        self._bcast(m.PrePrepare(self.view, seq, digest, batch))
        self._trace("pre-prepare", view=self.view, seq=seq, digest=digest.hex(),
                    requests=[_key_str(r.key) for r in reqs])
        self._watch_next_slot(seq)
        self._maybe_prepared(seq, slot)

    def _watch_next_slot(self, seq: int) -> None:
        """The slot we execute next now has a proposal: if it stalls (votes lost), the
        retransmit timer re-sends our part (`_on_retransmit_timeout`)."""
        if seq == self.last_executed + 1 and _T_RETRANSMIT not in self.timers:
            self._set_timer(_T_RETRANSMIT, self.config.retransmit_timeout_ns)

    def _slot(self, seq: int) -> Slot:
        """The slot for `seq` in the current view (votes from older views are discarded)."""
        slot = self.log.get(seq)
        if slot is None or slot.view != self.view:
            slot = Slot(view=self.view)
            self.log[seq] = slot
        return slot

    def _ignore_normal(self, sender: int, msg: m.PrePrepare | m.Prepare | m.Commit) -> str | None:
        """The shared guard of the three normal-case messages (§4.2, §4.4)."""
        if msg.view < self.view:
            self._hint_new_view(sender, msg.view)
            return "old view"
        if msg.view > self.view or not self.view_active:
            return self._buffer(sender, msg)
        if msg.seq <= self.h:
            return "below low watermark"
        if msg.seq > self.high_watermark:
            return self._buffer(sender, msg)
        return None

    def _hint_new_view(self, sender: int, their_view: int) -> None:
        """A peer still works in a view we have left: it missed the NEW-VIEW (a partition, a
        crash). Send it ours, which proves itself, so it need not wait for f+1 others to show
        it the way; at most once per view-change timeout per peer. (The BFT library's status
        messages serve the same end, in Castro's thesis.)"""
        nv = self.latest_new_view
        if nv is None or not self.view_active or nv.view <= their_view:
            return
        last = self.hinted.get(sender)
        if last is not None and last[0] == nv.view and (
                self.now_ns - last[1] < self.config.view_change_timeout_ns):
            return
        self.hinted[sender] = (nv.view, self.now_ns)
        self._send(sender, nv)

    def _buffer(self, sender: int, msg: Message) -> str:
        """Keep a message that may become acceptable (a later view, above the window).
        Each sender gets an equal share of the buffer, so a faulty one cannot fill it."""
        share = self.config.max_buffered_messages // self.n
        if self.buffered_by.get(sender, 0) >= share:
            return "buffer full"
        self.buffered_by[sender] = self.buffered_by.get(sender, 0) + 1
        self.future.append((sender, msg))
        self._maybe_notice_higher_view(sender, msg)
        return "buffered"

    def _on_pre_prepare(self, sender: int, pp: m.PrePrepare) -> None:
        reason = self._ignore_normal(sender, pp) or self._ignore_pre_prepare(sender, pp)
        if reason:
            if reason != "buffered":
                self._drop(reason, self.ids[sender], pp.KIND)
            return
        slot = self._slot(pp.seq)
        slot.view, slot.digest, slot.pre_prepared = pp.view, pp.digest, True
        self.batches[pp.digest] = pp.batch
        self.missing_batches.pop(pp.digest, None)
        self._note_preprepared(pp.seq, pp.digest, pp.view)
        for req in pp.batch.requests:
            self.ordered[req.key] = pp.seq
            self.pending.pop(req.key, None)
            if not self._answered(req.key):
                self._wait_for(req.key)
        slot.prepares[self.me] = pp.digest
        self._bcast(m.Prepare(pp.view, pp.seq, pp.digest, self.me))
        self._trace("pre-prepare", view=pp.view, seq=pp.seq, digest=pp.digest.hex(),
                    requests=[_key_str(r.key) for r in pp.batch.requests])
        self._watch_next_slot(pp.seq)
        self._maybe_prepared(pp.seq, slot)

    def _ignore_pre_prepare(self, sender: int, pp: m.PrePrepare) -> str | None:
        if sender != self.primary:
            return "pre-prepare not from primary"
        slot = self.log.get(pp.seq)
        if slot is not None and slot.view == pp.view and slot.pre_prepared:
            return "duplicate pre-prepare" if slot.digest == pp.digest else (
                "conflicting pre-prepare")
        self.costs.digest += 1
        if pp.batch.digest() != pp.digest:
            return "pre-prepare digest mismatch"
        if pp.digest == NULL_DIGEST or not pp.batch.requests:
            return "empty pre-prepare"
        if len(pp.batch.requests) > self.config.batch_size:
            return "batch too large"
        for req in pp.batch.requests:
            if not self._valid_request(req):
                return "bad request signature in batch"
        return None

    def _on_prepare(self, sender: int, p: m.Prepare) -> None:
        reason = self._ignore_normal(sender, p)
        if reason is None and sender == primary_of(p.view, self.n):
            reason = "prepare from primary"
        if reason:
            if reason != "buffered":
                self._drop(reason, self.ids[sender], p.KIND)
            return
        slot = self._slot(p.seq)
        if slot.prepares.setdefault(sender, p.digest) != p.digest:
            self._drop("conflicting prepare", self.ids[sender], p.KIND)
            return
        self._maybe_prepared(p.seq, slot)

    def _maybe_prepared(self, seq: int, slot: Slot) -> bool:
        """prepared(m,v,n,i): pre-prepare plus q-1 (2f when n = 3f+1) matching PREPAREs from
        distinct backups (§4.2). The primary sends none, so it never counts."""
        if slot.prepared or not slot.pre_prepared:
            return False
        primary = primary_of(slot.view, self.n)
        votes = sum(1 for r, d in slot.prepares.items() if d == slot.digest and r != primary)
        if votes < self.q - 1:
            return False
        slot.prepared = True
        self.prepared_info[seq] = m.SeqDigest(seq, slot.digest, slot.view)
        self._votes_dirty = True
        slot.commits[self.me] = slot.digest
        self._bcast(m.Commit(slot.view, seq, slot.digest, self.me))
        self._trace("prepared", view=slot.view, seq=seq, digest=slot.digest.hex())
        self._maybe_committed(seq, slot)
        return True

    def _on_commit(self, sender: int, c: m.Commit) -> None:
        reason = self._ignore_normal(sender, c)
        if reason:
            if reason != "buffered":
                self._drop(reason, self.ids[sender], c.KIND)
            return
        if c.seq > self.commit_progress.get(sender, 0):
            self.commit_progress[sender] = c.seq
            if _T_CATCH_UP not in self.timers and self._behind_peers():
                # f+1 replicas commit past a hole in our log: give the hole a moment to fill
                # (messages may be on their way), then fetch what we missed.
                self._set_timer(_T_CATCH_UP, self.config.fetch_timeout_ns)
        slot = self._slot(c.seq)
        if slot.commits.setdefault(sender, c.digest) != c.digest:
            self._drop("conflicting commit", self.ids[sender], c.KIND)
            return
        self._maybe_committed(c.seq, slot)

    def _maybe_committed(self, seq: int, slot: Slot) -> None:
        """committed-local: prepared plus q (2f+1) matching COMMITs, own included (§4.2)."""
        if slot.committed or not slot.prepared:
            return
        votes = sum(1 for d in slot.commits.values() if d == slot.digest)
        if votes < self.q:
            return
        slot.committed = True
        self._trace("committed", view=slot.view, seq=seq, digest=slot.digest.hex())
        self._maybe_execute()

    def _note_preprepared(self, seq: int, digest: bytes, view: int) -> None:
        self._votes_dirty = True
        entry = self.preprepared_info.setdefault(seq, {})
        entry[digest] = max(view, entry.get(digest, -1))
        if len(entry) > 4:  # bounded: keep the latest views only (TOCS §4.5 keeps O(1) per seq)
            oldest = min(entry, key=lambda d: (entry[d], d))
            del entry[oldest]

    # =========================================================================================
    # Execution, replies, checkpoints (§4.2 execute, §4.3)

    def _maybe_execute(self) -> None:
        while True:
            seq = self.last_executed + 1
            slot = self.log.get(seq)
            if slot is None or not slot.committed:
                if slot is not None:
                    self._watch_next_slot(seq)
                return
            batch = self.batches.get(slot.digest)
            if batch is None:
                self._fetch_batch(slot.digest)
                return
            self._execute(seq, slot.view, slot.digest, batch)

    def _execute(self, seq: int, view: int, digest: bytes, batch: m.Batch) -> None:
        assert seq == self.last_executed + 1, (seq, self.last_executed)
        to_run: list[m.Request] = []
        for req in batch.requests:
            cached = self.replies.get((req.client, req.session))
            if cached is None or req.timestamp > cached.timestamp:
                to_run.append(req)
        results = self.sm.execute(to_run, BlockInfo(seq, view, batch.timestamp_ns))
        assert len(results) == len(to_run)
        for req, result in zip(to_run, results, strict=True):
            cached = CachedReply(req.timestamp, result)
            self.replies[(req.client, req.session)] = cached
            self._send_reply(req.client, req.session, cached)
        for req in batch.requests:
            self.pending.pop(req.key, None)
            self.ordered.pop(req.key, None)
            self.waiting.pop(req.key, None)
        self.last_executed = seq
        self.executed[seq] = m.CommittedBatch(seq, view, batch)
        if self.config.durable:
            # Before the replies above leave (Persist effects go first in the step's output).
            self._persist.append(Persist("block", m.encode(self.executed[seq])))
        self._trace("execute", view=view, seq=seq, digest=digest.hex(),
                    timestamp_ns=batch.timestamp_ns,
                    requests=[_key_str(r.key) for r in batch.requests],
                    executed=[_key_str(r.key) for r in to_run])
        self.catch_up_tried = False
        if to_run and self.view_active:
            self.vc_attempts = 0
        if seq % self.config.checkpoint_interval == 0:
            self._take_checkpoint(seq)
        if self.timed_request is not None and self.timed_request not in self.waiting:
            # §4.4: the timer stops when the request it was started for executes, and starts
            # again for another request still waiting. Other requests executing do not reset
            # it: a primary that serves everyone but one client is still caught.
            self._restart_view_change_timer()
        if self.is_primary and self.view_active:
            self._maybe_propose()

    def _snapshot(self) -> bytes:
        """Canonical snapshot: the state machine's plus the reply cache (exactly-once state)."""
        replies = sorted(
            [c, s, r.timestamp, r.result.hex()] for (c, s), r in self.replies.items()
        )
        sm = self.sm.snapshot()
        return (len(sm).to_bytes(8, "big") + sm
                + json.dumps(replies, separators=(",", ":")).encode())

    def _restore(self, snapshot: bytes) -> None:
        size = int.from_bytes(snapshot[:8], "big")
        sm, rest = snapshot[8:8 + size], snapshot[8 + size:]
        try:
            rows = json.loads(rest)
            replies = {(str(c), int(s)): CachedReply(int(t), bytes.fromhex(r))
                       for c, s, t, r in rows}
        except (ValueError, TypeError) as exc:
            raise ValueError(f"malformed reply cache in snapshot: {exc}") from exc
        self.sm.restore(sm)
        self.replies = replies

    def _take_checkpoint(self, seq: int) -> None:
        snapshot = self._snapshot()
        self.costs.digest += 1
        digest = m.digest_of(snapshot)
        self.own_checkpoints[seq] = snapshot
        unsigned = m.Checkpoint(seq, digest, self.me, b"")
        cp = dataclasses.replace(unsigned, signature=self.keys.sign(m.encode(unsigned)))
        self.checkpoints.setdefault(seq, {})[self.me] = cp
        self._bcast(cp)
        self._trace("checkpoint", seq=seq, digest=digest.hex())
        self._maybe_stable(seq)

    def _valid_checkpoint(self, cp: m.Checkpoint) -> bool:
        if not 0 <= cp.replica < self.n or len(cp.digest) != 32:
            return False
        return self.keys.verify(self.ids[cp.replica], cp.unsigned(), cp.signature)

    def _on_checkpoint(self, sender: int, cp: m.Checkpoint) -> None:
        if cp.seq <= self.h:
            return  # old news; not an error
        if cp.seq % self.config.checkpoint_interval != 0:
            self._drop("checkpoint at a non-checkpoint sequence number", self.ids[sender], cp.KIND)
            return
        if not self._valid_checkpoint(cp):
            self._drop("bad checkpoint signature", self.ids[sender], cp.KIND)
            return
        self.checkpoints.setdefault(cp.seq, {}).setdefault(sender, cp)
        self._bound_checkpoints(sender)
        self._maybe_stable(cp.seq)

    def _bound_checkpoints(self, sender: int) -> None:
        seqs = sorted(s for s, by in self.checkpoints.items() if sender in by)
        keep = self.config.watermark_window // self.config.checkpoint_interval + 2
        for s in seqs[:-keep]:
            del self.checkpoints[s][sender]

    def _maybe_stable(self, seq: int) -> None:
        """A checkpoint is stable on q (2f+1) matching signed CHECKPOINTs (§4.3)."""
        if seq <= self.h:
            return
        proof = _matching_quorum(self.checkpoints.get(seq, {}), self.q)
        if proof is None:
            return
        digest = proof[0].digest
        own = self.own_checkpoints.get(seq)
        if own is not None and m.digest_of(own) == digest:
            self._make_stable(seq, proof, own)
        elif self.last_executed < seq:
            self._trace("behind", seq=seq, last_executed=self.last_executed)
            self._fetch_state()
        else:
            self._trace("checkpoint mismatch", seq=seq)
            self._fetch_state()

    def _make_stable(self, seq: int, proof: tuple[m.Checkpoint, ...], snapshot: bytes) -> None:
        self._advance_stable(seq, proof, snapshot)
        self._replay_future()
        if self.is_primary and self.view_active:
            self._maybe_propose()

    def _advance_stable(
        self, seq: int, proof: tuple[m.Checkpoint, ...], snapshot: bytes | None
    ) -> None:
        """Move the low watermark to a proven checkpoint and collect garbage; no other side
        effects (callers decide whether buffered messages and proposals may follow)."""
        self.h = seq
        self.stable_proof = proof
        self.stable_snapshot = snapshot
        self._collect_garbage()
        if self.config.durable and snapshot is not None:
            record = m.StateData(seq, proof, snapshot, (), self.view, b"", self.me)
            self._persist.append(Persist("checkpoint", m.encode(record)))
        self._trace("stable", seq=seq, digest=proof[0].digest.hex())

    def _collect_garbage(self) -> None:
        """Discard everything at or below the stable checkpoint (§4.3): the log stays within
        the watermark window however long the run."""
        h = self.h
        for table in (self.log, self.prepared_info, self.preprepared_info, self.executed,
                      self.own_checkpoints, self.checkpoints, self.transfer_votes):
            for seq in [s for s in table if s <= h]:
                del table[seq]  # type: ignore[attr-defined]
        live = {slot.digest for slot in self.log.values()}
        live.add(NULL_DIGEST)
        for d in [d for d in self.batches if d not in live]:
            del self.batches[d]
        for d in [d for d, (s, _, _) in self.transfer_bodies.items() if s <= h]:
            del self.transfer_bodies[d]
        for d in [d for d, s in self.missing_batches.items() if s <= h]:
            del self.missing_batches[d]

    # =========================================================================================
    # Durability (real mode): what a restart must remember, and recovering from it

    def _votes_record(self) -> bytes:
        """The view and every (seq, digest, view) this replica pre-prepared or prepared above
        the stable checkpoint. Without it a restarted replica could vote for a different
        digest at a (view, seq) it already voted on, which is what a faulty replica does."""
        prepared = [[e.seq, e.digest.hex(), e.view] for s, e in sorted(self.prepared_info.items())
                    if s > self.h]
        preprepared = [[s, d.hex(), v] for s in sorted(self.preprepared_info) if s > self.h
                       for d, v in sorted(self.preprepared_info[s].items())]
        return json.dumps({"view": self.view, "active": self.view_active, "h": self.h,
                           "prepared": prepared, "preprepared": preprepared},
                          separators=(",", ":")).encode()

    def restore_durable(self, votes: bytes | None, checkpoint: bytes | None,
                        blocks: Iterable[bytes]) -> None:
        """Rebuild a freshly constructed replica from what it persisted before a crash: the
        stable checkpoint (verified against its 2f+1 proof), the batches it executed after
        it (its own record, replayed in order), and its votes. Call before Start(recovering).
        Raises ValueError if the records are malformed or do not verify."""
        self._out = []
        if checkpoint:
            record = m.decode(checkpoint)
            if type(record) is not m.StateData or not self._valid_proof(
                    record.stable_seq, record.checkpoint_proof):
                raise ValueError("stored checkpoint does not verify")
            if m.digest_of(record.snapshot) != record.checkpoint_proof[0].digest:
                raise ValueError("stored snapshot does not match its proof")
            self._restore(record.snapshot)
            self.last_executed = self.h = record.stable_seq
            self.stable_proof = record.checkpoint_proof
            self.stable_snapshot = record.snapshot
            self.own_checkpoints[record.stable_seq] = record.snapshot
        for raw in blocks:
            cb = m.decode(raw)
            if type(cb) is not m.CommittedBatch:
                raise ValueError("stored block is not a committed batch")
            if cb.seq == self.last_executed + 1:
                self._execute(cb.seq, cb.view, cb.batch.digest(), cb.batch)
        if votes:
            self._restore_votes(votes)
        self.next_seq = max([self.next_seq, self.last_executed + 1]
                            + [s + 1 for s, by in self.preprepared_info.items()
                               if self.view in by.values()])
        self._out = []
        self._persist = []

    def _restore_votes(self, votes: bytes) -> None:
        try:
            data = json.loads(votes)
            self.view = int(data["view"])
            self.view_active = bool(data["active"])
            for seq, digest, view in data["prepared"]:
                if seq > self.h:
                    self.prepared_info[seq] = m.SeqDigest(seq, bytes.fromhex(digest), view)
            for seq, digest, view in data["preprepared"]:
                if seq > self.h:
                    self._note_preprepared(seq, bytes.fromhex(digest), view)
                    if view == self.view:
                        # Re-pin the digest we voted for in this view: a conflicting
                        # PRE-PREPARE for this (view, seq) will now be refused.
                        slot = self._slot(seq)
                        slot.digest, slot.pre_prepared = bytes.fromhex(digest), True
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"malformed votes record: {exc}") from exc

    # =========================================================================================
    # Timers

    def _on_start(self, recovering: bool) -> None:
        self.timers.clear()
        if recovering:
            self._trace("recovering", last_executed=self.last_executed, view=self.view)
            self._fetch_state()
        self._restart_view_change_timer()
        self._maybe_arm_new_view_timer()
        if self.is_primary and self.view_active:
            self._maybe_propose()

    def _on_timeout(self, key: str) -> None:
        if key == _T_BATCH:
            if self.is_primary and self.view_active and self.pending:
                if self._in_flight() < self.config.max_in_flight:
                    self._propose(self._take_pending(self.config.batch_size))
                self._maybe_propose()
        elif key == _T_VIEW_CHANGE:
            self._on_view_change_timeout()
        elif key == _T_FETCH:
            self._on_fetch_timeout()
        elif key == _T_RETRANSMIT:
            self._on_retransmit_timeout()
        elif key == _T_CATCH_UP and self._behind_peers():
            self._fetch_state()

    def _on_retransmit_timeout(self) -> None:
        """The next slot has not committed for a whole period: re-send our part of it (the
        paper's implementation retransmits on loss too, §6.1). Receivers that already have
        a message ignore the copy; one that lost it can now complete the certificate."""
        if not self.view_active:
            # Waiting for a NEW-VIEW: our VIEW-CHANGE may have been lost (a partition that has
            # healed since); send it again until the view is installed.
            own = self.view_changes.get(self.view, {}).get(self.me)
            if own is not None:
                self._bcast(own)
                self._set_timer(_T_RETRANSMIT, self._view_change_timeout() // 4 or 1)
            return
        seq = self.last_executed + 1
        slot = self.log.get(seq)
        if slot is None or slot.committed:
            self.stuck_seq = 0
            return
        if self.stuck_seq == seq:
            batch = self.batches.get(slot.digest)
            if slot.view == self.view and slot.pre_prepared:
                if self.is_primary and batch is not None and batch.requests:
                    self._bcast(m.PrePrepare(slot.view, seq, slot.digest, batch))
                elif not self.is_primary:
                    self._bcast(m.Prepare(slot.view, seq, slot.digest, self.me))
            if slot.prepared:
                self._bcast(m.Commit(slot.view, seq, slot.digest, self.me))
            self._trace("retransmit", seq=seq, view=slot.view)
        self.stuck_seq = seq
        self._set_timer(_T_RETRANSMIT, self.config.retransmit_timeout_ns)

    def _wait_for(self, key: tuple[str, int, int]) -> None:
        self.waiting[key] = None
        if _T_VIEW_CHANGE not in self.timers:
            self._arm_view_change_timer(key)

    def _arm_view_change_timer(self, key: tuple[str, int, int]) -> None:
        self.timed_request = key
        self.timer_mark = self.last_executed
        self._set_timer(_T_VIEW_CHANGE, self._view_change_timeout())

    def _restart_view_change_timer(self) -> None:
        """(Re)start the timer for the oldest request still waiting, or stop it (§4.4)."""
        if not self.view_active:
            return
        if self.waiting:
            self._arm_view_change_timer(next(iter(self.waiting)))
        else:
            self.timed_request = None
            self._cancel_timer(_T_VIEW_CHANGE)

    def _view_change_timeout(self) -> int:
        shift = min(self.vc_attempts, _MAX_BACKOFF_SHIFT)
        return self.config.view_change_timeout_ns << shift

    def _on_view_change_timeout(self) -> None:
        stalled = self.last_executed == self.timer_mark
        if self.view_active and stalled and self._behind_peers() and not self.catch_up_tried:
            # Others are committing past a gap in our log: perhaps only we lost messages. Try
            # state transfer once before blaming the primary; if that brings nothing (nobody
            # executed past the gap either), the next expiry asks for a view change.
            self.catch_up_tried = True
            self._fetch_state()
            self._set_timer(_T_VIEW_CHANGE, self._view_change_timeout())
            return
        self.timed_request = None
        self._start_view_change(self.view + 1)

    def _behind_peers(self) -> bool:
        nxt = self.last_executed + 1
        slot = self.log.get(nxt)
        if slot is not None and slot.committed:
            return False
        ahead = sum(1 for seq in self.commit_progress.values() if seq > nxt)
        return ahead >= self.f + 1

    # =========================================================================================
    # View change (§4.4, decision procedure from TOCS 2002 §4.5)

    def _start_view_change(self, new_view: int) -> None:
        assert new_view > self.view or not self.view_active
        self.view = new_view
        self.view_active = False
        self._votes_dirty = True
        self._cancel_timer(_T_BATCH)
        prepared = tuple(self.prepared_info[s] for s in sorted(self.prepared_info) if s > self.h)
        preprepared = tuple(
            m.SeqDigest(s, d, v)
            for s in sorted(self.preprepared_info) if s > self.h
            for d, v in sorted(self.preprepared_info[s].items())
        )
        unsigned = m.ViewChange(new_view, self.h, self.stable_proof, prepared, preprepared,
                                self.me, b"")
        vc = dataclasses.replace(unsigned, signature=self.keys.sign(unsigned.unsigned()))
        self.view_changes.setdefault(new_view, {})[self.me] = vc
        self._bcast(vc)
        self._trace("view-change", view=new_view, stable_seq=self.h, prepared=len(prepared))
        self.new_view_timeout_ns = self._view_change_timeout()
        self._cancel_timer(_T_VIEW_CHANGE)
        self._set_timer(_T_RETRANSMIT, self.new_view_timeout_ns // 4 or 1)
        self.vc_attempts += 1
        self._maybe_arm_new_view_timer()
        self._maybe_new_view(new_view)

    def _maybe_arm_new_view_timer(self) -> None:
        """§4.5.2 rule 1: after sending VIEW-CHANGE for v, a replica starts its timer only
        once it holds 2f+1 VIEW-CHANGEs for v. A replica alone (cut off, or behind) thus
        cannot run ahead into ever higher views that the others then have to reach."""
        if self.view_active or _T_VIEW_CHANGE in self.timers:
            return
        if len(self.view_changes.get(self.view, {})) >= self.q:
            self._set_timer(_T_VIEW_CHANGE, self.new_view_timeout_ns)

    def _ignore_view_change(self, sender: int, vc: m.ViewChange) -> str | None:
        if vc.view < self.view or (vc.view == self.view and self.view_active):
            self._hint_new_view(sender, vc.view - 1)  # it has not installed vc.view
            return "old view-change"
        if vc.view > self.view + 64 * self.n:
            return "view-change too far ahead"
        if vc.replica != sender:
            return "view-change not from its signer"
        return self._invalid_view_change(vc)

    def _invalid_view_change(self, vc: m.ViewChange) -> str | None:
        """Check a VIEW-CHANGE on its own: signature, checkpoint proof C, shape of P and Q."""
        if not 0 <= vc.replica < self.n:
            return "view-change from unknown replica"
        if not self.keys.verify(self.ids[vc.replica], vc.unsigned(), vc.signature):
            return "bad view-change signature"
        if not self._valid_proof(vc.stable_seq, vc.checkpoint_proof):
            return "bad checkpoint proof"
        window = self.config.watermark_window
        for entry in vc.prepared + vc.preprepared:
            if not vc.stable_seq < entry.seq <= vc.stable_seq + window or entry.view >= vc.view:
                return "view-change entry outside its window"
        if len({e.seq for e in vc.prepared}) != len(vc.prepared):
            return "view-change with two prepared entries for one seq"
        if len(vc.preprepared) > 4 * window:
            return "view-change too large"
        return None

    def _valid_proof(self, seq: int, proof: tuple[m.Checkpoint, ...]) -> bool:
        if seq == 0:
            return not proof
        if seq % self.config.checkpoint_interval:
            return False
        signers = {cp.replica for cp in proof}
        if len(signers) != len(proof) or len(proof) < self.q:
            return False
        digest = proof[0].digest
        return all(
            cp.seq == seq and cp.digest == digest and self._valid_checkpoint(cp) for cp in proof
        )

    def _on_view_change(self, sender: int, vc: m.ViewChange) -> None:
        reason = self._ignore_view_change(sender, vc)
        if reason:
            self._drop(reason, self.ids[sender], vc.KIND)
            return
        self.view_changes.setdefault(vc.view, {}).setdefault(sender, vc)
        if self._maybe_join_higher_view():
            return
        # A VIEW-CHANGE for a later view also says its sender has left ours, perhaps through
        # a view whose NEW-VIEW we lost; it may be the only sign of that left.
        self._maybe_notice_higher_view(sender, vc)
        if vc.view == self.view:
            self._maybe_arm_new_view_timer()
        self._maybe_new_view(vc.view)

    def _maybe_join_higher_view(self) -> bool:
        """§4.5.2 rule 2: f+1 VIEW-CHANGEs for views above ours mean at least one correct
        replica wants a change: join the smallest view that f+1 of them reached."""
        highest: dict[int, int] = {}
        for view, by in self.view_changes.items():
            if view > self.view:
                for r in by:
                    if r != self.me:
                        highest[r] = max(view, highest.get(r, 0))
        if len(highest) < self.f + 1:
            return False
        target = sorted(highest.values(), reverse=True)[self.f]
        if target <= self.view:
            return False
        self._trace("join-view", view=target)
        self._start_view_change(target)
        return True

    def _maybe_new_view(self, view: int) -> None:
        if view != self.view or self.view_active or primary_of(view, self.n) != self.me:
            return
        by = self.view_changes.get(view, {})
        if self.me not in by or len(by) < self.q:
            return
        chosen = [by[r] for r in sorted(by)]
        assignments = decide_new_view(chosen, self.n, self.f, self.q)
        if assignments is None:
            return  # not decidable yet: wait for more VIEW-CHANGEs (TOCS §4.5)
        unsigned = m.NewView(view, tuple(chosen), assignments, self.me, b"")
        nv = dataclasses.replace(unsigned, signature=self.keys.sign(unsigned.unsigned()))
        self._bcast(nv)
        self._trace("new-view", view=view, assignments=len(assignments))
        self._enter_view(nv)

    def _ignore_new_view(self, nv: m.NewView) -> str | None:
        if nv.view < self.view or (nv.view == self.view and self.view_active):
            return "old new-view"
        if nv.replica != primary_of(nv.view, self.n):
            return "new-view not from the view's primary"
        if not self.keys.verify(self.ids[nv.replica], nv.unsigned(), nv.signature):
            return "bad new-view signature"
        signers = [vc.replica for vc in nv.view_changes]
        if len(set(signers)) != len(signers) or len(signers) < self.q:
            return "new-view without a quorum of view-changes"
        for vc in nv.view_changes:
            if vc.view != nv.view or self._invalid_view_change(vc):
                return "new-view carries an invalid view-change"
        if decide_new_view(list(nv.view_changes), self.n, self.f, self.q) != nv.assignments:
            return "new-view O set does not follow from V"
        return None

    def _on_new_view(self, sender: int, nv: m.NewView) -> None:
        # A NEW-VIEW may come from its primary or be relayed by a replica that saw us behind
        # (`_hint_new_view`): it is checked on its own signature and proofs either way.
        self._accept_new_view(nv)

    def _accept_new_view(self, nv: m.NewView) -> None:
        reason = self._ignore_new_view(nv)
        if reason:
            self._drop(reason, self.ids[nv.replica], nv.KIND)
            return
        self._enter_view(nv)

    def _enter_view(self, nv: m.NewView) -> None:
        """Install view v+1 from a valid NEW-VIEW: adopt its checkpoint, re-run O (§4.4)."""
        self.view = nv.view
        self.view_active = True
        self._votes_dirty = True
        self.latest_new_view = nv
        for v in [v for v in self.view_changes if v <= nv.view]:
            del self.view_changes[v]
        best = max(nv.view_changes, key=lambda vc: (vc.stable_seq, vc.replica))
        if best.stable_seq > self.h:
            self._adopt_checkpoint(best.stable_seq, best.checkpoint_proof)
        assigned = {a.seq: a.digest for a in nv.assignments if a.seq > self.h}
        self._requeue_dropped_proposals(assigned)
        self.log = {}
        primary = self.is_primary
        top = max([self.h, *assigned])
        for a in nv.assignments:
            if a.seq <= self.h:
                continue
            slot = self._slot(a.seq)
            slot.view, slot.digest, slot.pre_prepared = nv.view, a.digest, True
            self._note_preprepared(a.seq, a.digest, nv.view)
            if a.digest not in self.batches:
                self._fetch_batch(a.digest, a.seq)
            if not primary:
                slot.prepares[self.me] = a.digest
                self._bcast(m.Prepare(nv.view, a.seq, a.digest, self.me))
        self.next_seq = max(top, self.last_executed) + 1
        self.commit_progress.clear()
        self.ahead_of_us.clear()
        self._trace("enter-view", view=nv.view, primary=self.ids[self.primary])
        self._restart_view_change_timer()
        self._replay_future()
        for a in nv.assignments:
            assigned_slot = self.log.get(a.seq)
            if assigned_slot is not None:
                self._maybe_prepared(a.seq, assigned_slot)
        if primary:
            self._maybe_propose()

    def _requeue_dropped_proposals(self, assigned: dict[int, bytes]) -> None:
        """Requests of old-view proposals that the new view does not carry go back to the
        pending queue (a new primary proposes them again); `ordered` is rebuilt from O."""
        for seq, slot in sorted(self.log.items()):
            if seq > self.h and assigned.get(seq) != slot.digest:
                batch = self.batches.get(slot.digest)
                for req in batch.requests if batch is not None else ():
                    if not self._answered(req.key):
                        self.pending[req.key] = req
        self.ordered = {}
        for seq, digest in sorted(assigned.items()):
            batch = self.batches.get(digest)
            for req in batch.requests if batch is not None else ():
                self.ordered[req.key] = seq
                self.pending.pop(req.key, None)

    def _adopt_checkpoint(self, seq: int, proof: tuple[m.Checkpoint, ...]) -> None:
        own = self.own_checkpoints.get(seq)
        if own is not None and m.digest_of(own) == proof[0].digest:
            self._advance_stable(seq, proof, own)
            return
        # We have not reached that checkpoint: move the window, fetch the state.
        self._advance_stable(seq, proof, None)
        self._fetch_state()

    def _maybe_notice_higher_view(self, sender: int, msg: Message) -> None:
        """f+1 replicas beyond us in the view sequence: we missed a NEW-VIEW (or it is on its
        way); ask for state, whose answer carries the latest NEW-VIEW.

        A replica's place is (view, installed): a VIEW-CHANGE for view v puts its sender at
        (v, not installed), any other message of view v at (v, installed). A sender is ahead
        only when its place is beyond ours, so VIEW-CHANGEs for the very view we are waiting
        to install (its peers waiting with us) never start a needless state fetch."""
        view = getattr(msg, "view", 0)
        place = (view, not isinstance(msg, m.ViewChange))
        ours = (self.view, self.view_active)
        if place <= ours:
            return
        self.ahead_of_us[sender] = max(place, self.ahead_of_us.get(sender, (0, False)))
        ahead = sum(1 for p in self.ahead_of_us.values() if p > ours)
        if ahead >= self.f + 1 and not self.fetching_state:
            self._fetch_state()

    def _replay_future(self) -> None:
        if not self.future:
            return
        buffered, self.future = self.future, []
        self.buffered_by = {}
        for sender, msg in buffered:
            if getattr(msg, "view", 0) < self.view:
                continue
            self._dispatch(sender, msg)

    # =========================================================================================
    # Fetching batch bodies and state (state transfer)

    def _fetch_batch(self, digest: bytes, seq: int | None = None) -> None:
        if digest in self.missing_batches:
            return
        self.missing_batches[digest] = seq if seq is not None else self.last_executed + 1
        self._bcast(m.FetchBatch(digest, self.me))
        if _T_FETCH not in self.timers:
            self._set_timer(_T_FETCH, self.config.fetch_timeout_ns)

    def _on_fetch_batch(self, sender: int, fb: m.FetchBatch) -> None:
        batch = self.batches.get(fb.digest)
        if batch is not None and fb.digest != NULL_DIGEST:
            self._send(sender, m.BatchData(batch, self.me))

    def _on_batch_data(self, sender: int, bd: m.BatchData) -> None:
        self.costs.digest += 1
        digest = bd.batch.digest()
        if digest not in self.missing_batches:
            return  # not asked for (or already have it): ignore quietly
        for req in bd.batch.requests:
            if not self._valid_request(req):
                self._drop("bad request signature in batch", self.ids[sender], bd.KIND)
                return
        del self.missing_batches[digest]
        self.batches[digest] = bd.batch
        self._maybe_execute()

    def _fetch_state(self) -> None:
        self.fetching_state = True
        self.fetch_mark = self.transferred
        self._bcast(m.FetchState(self.last_executed, self.me))
        self._trace("fetch-state", last_executed=self.last_executed)
        if _T_FETCH not in self.timers:
            self._set_timer(_T_FETCH, self.config.fetch_timeout_ns)

    def _on_fetch_timeout(self) -> None:
        if self.missing_batches:
            for digest in list(self.missing_batches):
                self._bcast(m.FetchBatch(digest, self.me))
        if self.fetching_state:
            if self.transferred != self.fetch_mark or self.h > self.last_executed:
                self._fetch_state()  # the last round brought something (or we are not there yet)
            else:
                self.fetching_state = False
        if (self.missing_batches or self.fetching_state) and _T_FETCH not in self.timers:
            self._set_timer(_T_FETCH, self.config.fetch_timeout_ns)

    def _on_fetch_state(self, sender: int, fs: m.FetchState) -> None:
        send_checkpoint = self.h > fs.last_executed and self.stable_snapshot is not None
        start = max(fs.last_executed, self.h if send_checkpoint else fs.last_executed)
        end = min(self.last_executed, start + self.config.watermark_window)
        committed = tuple(self.executed[s] for s in range(start + 1, end + 1)
                          if s in self.executed)
        if not send_checkpoint and not committed and self.latest_new_view is None:
            return
        nv = m.encode(self.latest_new_view) if self.latest_new_view is not None else b""
        data = m.StateData(
            self.h if send_checkpoint else 0,
            self.stable_proof if send_checkpoint else (),
            (self.stable_snapshot or b"") if send_checkpoint else b"",
            committed,
            self.view,
            nv,
            self.me,
        )
        self._send(sender, data)

    def _on_state_data(self, sender: int, sd: m.StateData) -> None:
        if not self.fetching_state:
            return  # a late answer to a finished fetch: nothing to do
        if sd.new_view:
            self._maybe_adopt_new_view(sd.new_view)
        if sd.stable_seq > self.last_executed:
            self._maybe_install_snapshot(sender, sd)
        window_top = self.last_executed + self.config.watermark_window
        for cb in sd.committed:
            if self.last_executed < cb.seq <= window_top:
                self.costs.digest += 1
                digest = cb.batch.digest()
                self.transfer_votes.setdefault(cb.seq, {}).setdefault(digest, set()).add(sender)
                self.transfer_bodies[digest] = (cb.seq, cb.view, cb.batch)
        self._execute_transferred()

    def _maybe_adopt_new_view(self, raw: bytes) -> None:
        try:
            nv = m.decode(raw)
        except DecodeError:
            return
        if type(nv) is m.NewView and (
            nv.view > self.view or (nv.view == self.view and not self.view_active)
        ):
            self._accept_new_view(nv)

    def _maybe_install_snapshot(self, sender: int, sd: m.StateData) -> None:
        if not self._valid_proof(sd.stable_seq, sd.checkpoint_proof) or sd.stable_seq == 0:
            self._drop("bad checkpoint proof in state data", self.ids[sender], sd.KIND)
            return
        self.costs.digest += 1
        if m.digest_of(sd.snapshot) != sd.checkpoint_proof[0].digest:
            self._drop("snapshot does not match its proof", self.ids[sender], sd.KIND)
            return
        try:
            self._restore(sd.snapshot)
        except ValueError:
            self._drop("malformed snapshot", self.ids[sender], sd.KIND)
            return
        self.last_executed = sd.stable_seq
        self.transferred += 1
        self.next_seq = max(self.next_seq, self.last_executed + 1)
        self.executed.clear()
        self.own_checkpoints[sd.stable_seq] = sd.snapshot
        self._trace("state-transfer", seq=sd.stable_seq, digest=sd.checkpoint_proof[0].digest.hex())
        for req_key in [k for k in self.waiting if self._answered(k)]:
            del self.waiting[req_key]
        if sd.stable_seq >= self.h:
            self._make_stable(sd.stable_seq, sd.checkpoint_proof, sd.snapshot)

    def _answered(self, key: tuple[str, int, int]) -> bool:
        cached = self.replies.get((key[0], key[1]))
        return cached is not None and cached.timestamp >= key[2]

    def _execute_transferred(self) -> None:
        """Execute fetched batches in order once f+1 replicas vouch for the same digest at a
        seq: at least one of them is correct, so that batch was committed."""
        while True:
            seq = self.last_executed + 1
            votes = self.transfer_votes.get(seq)
            if not votes:
                break
            digest = next((d for d, who in sorted(votes.items()) if len(who) > self.f), None)
            if digest is None:
                break
            _, view, batch = self.transfer_bodies[digest]
            slot = self.log.get(seq)
            if slot is not None and slot.committed and slot.digest != digest:
                # f+1 vouchers contradict what we committed: more than f replicas are faulty
                # (impossible within the fault bound). Keep our own certificate.
                self._drop("state transfer contradicts a committed batch", "", "STATE-DATA")
                del self.transfer_votes[seq]
                break
            del self.transfer_votes[seq]
            self.batches.setdefault(digest, batch)
            self._execute(seq, view, digest, batch)
            self.transferred += 1
        self._maybe_execute()


def decide_new_view(
    view_changes: list[m.ViewChange], n: int, f: int, q: int
) -> tuple[m.SeqDigest, ...] | None:
    """Compute the O set of a NEW-VIEW from its V set, or None if V does not decide yet.

    For each seq between the highest stable checkpoint in V (min-s) and the highest prepared
    seq (max-s), choose (Castro, TOCS 2002 §4.5, condition A / B):
      A. digest d prepared in view v by some replica, when q messages in V do not contradict it
         (no prepared entry for seq, or one from a lower view, or the same (v, d)) and f+1
         messages report having pre-prepared d in view v or later; or
      B. the null request, when q messages in V have no prepared entry for seq.
    Both the new primary and every backup run this on the same V, so backups can check O.
    """
    min_s = max(vc.stable_seq for vc in view_changes)
    prepared = [{e.seq: e for e in vc.prepared} for vc in view_changes]
    preprepared = [_preprepared_by_seq(vc.preprepared) for vc in view_changes]
    max_s = max((s for p in prepared for s in p), default=min_s)
    chosen: list[m.SeqDigest] = []
    for seq in range(min_s + 1, max_s + 1):
        candidates = sorted(
            {(p[seq].view, p[seq].digest) for p in prepared if seq in p}, reverse=True
        )
        pick: bytes | None = None
        for view, digest in candidates:
            not_contradicted = sum(
                1 for p in prepared
                if seq not in p or p[seq].view < view
                or (p[seq].view == view and p[seq].digest == digest)
            )
            backed = sum(1 for q_ in preprepared if q_.get(seq, {}).get(digest, -1) >= view)
            if not_contradicted >= q and backed >= f + 1:
                pick = digest
                break
        if pick is None:
            if sum(1 for p in prepared if seq not in p) >= q:
                pick = NULL_DIGEST
            else:
                return None
        chosen.append(m.SeqDigest(seq, pick, 0))
    return tuple(chosen)


def _preprepared_by_seq(entries: Iterable[m.SeqDigest]) -> dict[int, dict[bytes, int]]:
    out: dict[int, dict[bytes, int]] = {}
    for e in entries:
        by = out.setdefault(e.seq, {})
        by[e.digest] = max(e.view, by.get(e.digest, -1))
    return out


def _matching_quorum(by_replica: dict[int, m.Checkpoint],
                     q: int) -> tuple[m.Checkpoint, ...] | None:
    groups: dict[bytes, list[m.Checkpoint]] = {}
    for r in sorted(by_replica):
        cp = by_replica[r]
        groups.setdefault(cp.digest, []).append(cp)
    for digest in sorted(groups):
        if len(groups[digest]) >= q:
            return tuple(groups[digest][:q])
    return None


def _key_str(key: tuple[str, int, int]) -> str:
    return f"{key[0]}/{key[1]}/{key[2]}"

