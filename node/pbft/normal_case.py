"""Normal-case operation: client requests (OSDI '99 §4.1), the three-phase protocol
PRE-PREPARE, PREPARE, COMMIT (§4.2), execution and replies, and the timers that keep it going
(retransmission, §6.1; the view-change timer of §4.4).

Why this exists: this is the protocol's hot path, the code every request goes through while
the primary is correct. The primary orders pending requests into batches within the window;
a replica that holds a pre-prepare and 2f matching PREPAREs has prepared, one that holds 2f+1
COMMITs has committed, and committed batches execute in sequence order against the state
machine, whose results go back to the clients (once: the reply cache is replicated state). Every
`checkpoint_interval` batches it hands the state to node.pbft.checkpoint (which remembers it,
serialising nothing).

Admission (docs/security.md): a request the state machine refuses (`sm.admissible(op)`, a pure
function of the bytes) is never put in `pending`, never ordered and never stored; every honest
replica answers it at once with `refused:<rule>` (not cached: the reply cache is replicated
state), the primary relays it so that f+1 replicas answer without waiting for the client to
retransmit, and backups refuse a PRE-PREPARE that carries one, so a primary that proposes it
is replaced by a view change.

What it must not know: message authentication (node.pbft.replica checks MACs before anything
reaches a handler), how a view change is decided (node.pbft.view_change), how state is
fetched (node.pbft.transfer). It calls those parts directly; they call back through the
replica (`ViewChangeHost`, `TransferHost`).
"""

from __future__ import annotations

from node import messages as m
from node.config import Config
from node.crypto import Keyring
from node.messages import Message
from node.pbft import durable
from node.pbft.checkpoint import CachedReply, Checkpoints, checkpoint_digest, read_snapshot
from node.pbft.log import NULL_DIGEST, Future, Log, Slot, take_batch
from node.pbft.outbox import T_BATCH, T_CATCH_UP, T_RETRANSMIT, T_VIEW_CHANGE, Outbox
from node.pbft.transfer import StateTransfer
from node.pbft.view_change import ViewChanges
from node.quorum import primary_of
from node.statemachine import BlockInfo, StateMachine

__all__ = ["NormalCase"]

RequestKey = tuple[str, int, int]
"""(client, session, timestamp)."""


class NormalCase:
    """Requests known but not executed (`pending` until ordered, `ordered` until executed,
    `waiting` while a client waits on us), the reply cache, and the view-change timer."""

    def __init__(self, out: Outbox, log: Log, future: Future, checkpoints: Checkpoints,
                 transfer: StateTransfer, views: ViewChanges, keys: Keyring,
                 sm: StateMachine, client_ids: frozenset[str], ids: tuple[str, ...], me: int,
                 f: int, q: int, config: Config) -> None:
        self.out = out
        self.log = log
        self.future = future
        self.checkpoints = checkpoints
        self.transfer = transfer
        self.views = views
        self.keys = keys
        self.costs = keys.costs
        self.sm = sm
        self.client_ids = client_ids
        self.ids = ids
        self.me = me
        self.n = len(ids)
        self.f = f
        self.q = q
        self.config = config
        self.pending: dict[RequestKey, m.Request] = {}
        self.ordered: dict[RequestKey, int] = {}
        self.waiting: dict[RequestKey, None] = {}
        self.replies: dict[tuple[str, int], CachedReply] = {}
        self.commit_progress: dict[int, int] = {}
        # How many peers in commit_progress are past slot `_ahead_at` (-1: not counted yet),
        # kept up to date on each COMMIT so `behind_peers` does not rescan n peers per COMMIT.
        self._ahead_at = -1
        self._ahead = 0
        """The highest seq each peer sent a COMMIT for (are f+1 peers past a hole in ours?)."""
        self.catch_up_tried = False
        self.catch_up_from = 0
        """last_executed when the catch-up timer was armed."""
        self.timed_request: RequestKey | None = None
        self.timer_mark = 0
        self.stuck_seq = 0

    def is_primary(self) -> bool:
        return primary_of(self.log.view, self.n) == self.me

    # =========================================================================================
    # Client requests (§4.1)

    def valid_request(self, req: m.Request) -> bool:
        """A client we serve signed it (`Keyring.verify_signed`: once per request object)."""
        return req.client in self.client_ids and self.keys.verify_signed(req.client, req)

    def _ignore_request(self, req: m.Request) -> str | None:
        if not self.valid_request(req):
            return "bad request signature"
        cached = self.replies.get((req.client, req.session))
        if cached is not None and req.timestamp < cached.timestamp:
            return "request older than last reply"
        return None

    def on_request(self, req: m.Request, from_client: bool) -> None:
        reason = self._ignore_request(req)
        if reason:
            self.out.drop(reason, req.client, req.KIND)
            return
        refused = self.sm.admissible(req.op)
        if refused is not None:
            self._refuse(req, refused, from_client)
            return
        cached = self.replies.get((req.client, req.session))
        if cached is not None and cached.timestamp == req.timestamp:
            # Already executed: answer again from the reply cache (exactly-once, §4.1).
            self._send_reply(req.client, req.session, cached)
            return
        key = req.key
        if key in self.ordered or key in self.pending:
            if from_client and not self.is_primary():
                # A known, unexecuted request again: its client waits, so do we (§4.4).
                self.wait_for(key)
            return
        if len(self.pending) >= self.config.max_pending_requests:
            self.out.drop("pending requests full", req.client, req.KIND)
            return
        self.pending[key] = req
        log = self.log
        if self.is_primary() and log.view_active:
            self.maybe_propose()
        elif from_client:
            # §4.4: a backup relays a retransmitted request to the primary and starts its timer.
            if log.view_active:
                self.out.send(primary_of(log.view, self.n), req)
            self.wait_for(key)

    def _refuse(self, req: m.Request, rule: str, from_client: bool) -> None:
        """An inadmissible request: count it, answer `refused:<rule>` and forget it. The rule
        is a name from a closed set (never the request's content). The primary relays it once
        to the backups (they check it themselves) so the client gets f+1 matching answers."""
        self.out.drop("inadmissible request", req.client, req.KIND)
        self.out.trace("refused", client=req.client, session=req.session,
                       timestamp=req.timestamp, rule=rule)
        self.out.send(req.client, m.Reply(self.log.view, req.timestamp, req.client,
                                          req.session, self.me, b"refused:" + rule.encode()))
        if from_client and self.is_primary():
            self.out.bcast(req)

    def batch_refusal(self, requests: tuple[m.Request, ...]) -> str | None:
        """Why a batch (of a PRE-PREPARE, or fetched) may not be accepted, or None: a request
        whose client signature fails, or one the state machine does not admit."""
        for req in requests:
            if not self.valid_request(req):
                return "bad request signature in batch"
        for req in requests:
            if self.sm.admissible(req.op) is not None:
                return "inadmissible request in batch"
        return None

    def _send_reply(self, client: str, session: int, cached: CachedReply) -> None:
        reply = m.Reply(self.log.view, cached.timestamp, client, session, self.me, cached.result)
        self.out.send(client, reply)

    def answered(self, key: RequestKey) -> bool:
        cached = self.replies.get((key[0], key[1]))
        return cached is not None and cached.timestamp >= key[2]

    def forget_answered(self) -> None:
        for req_key in [k for k in self.waiting if self.answered(k)]:
            del self.waiting[req_key]

    # =========================================================================================
    # Normal case: pre-prepare, prepare, commit (§4.2)

    def maybe_propose(self) -> None:
        """Primary: turn pending requests into batches while the window and in-flight bound
        allow (§4.2 batching: buffer while too many batches are in progress)."""
        cfg, log = self.config, self.log
        while (
            self.pending
            and log.in_flight() < cfg.max_in_flight
            and log.next_seq <= log.high
        ):
            if len(self.pending) < cfg.batch_size and cfg.batch_timeout_ns > 0:
                if T_BATCH not in self.out.timers:
                    self.out.set_timer(T_BATCH, cfg.batch_timeout_ns)
                return
            self._propose(take_batch(self.pending, cfg.batch_size))
        if not self.pending:
            self.out.cancel_timer(T_BATCH)

    def on_batch_timeout(self) -> None:
        if self.is_primary() and self.log.view_active and self.pending:
            if self.log.in_flight() < self.config.max_in_flight:
                self._propose(take_batch(self.pending, self.config.batch_size))
            self.maybe_propose()

    def _propose(self, reqs: list[m.Request]) -> None:
        log = self.log
        seq = log.next_seq
        log.next_seq += 1
        log.last_block_ts = max(log.last_block_ts, self.out.now_ns)
        batch = m.Batch(log.last_block_ts, tuple(reqs))
        digest = batch.digest()
        self.costs.digest += 1
        log.batches[digest] = batch
        view = log.view
        slot = log.slot(seq)
        slot.view, slot.digest, slot.pre_prepared = view, digest, True
        log.note_preprepared(seq, digest, view)
        for req in reqs:
            self.ordered[req.key] = seq
        self.out.bcast(m.PrePrepare(view, seq, digest, batch))
        self.out.trace("pre-prepare", view=view, seq=seq, digest=_hex(digest),
                       requests=[_key_str(r.key) for r in reqs])
        self._watch_next_slot(seq)
        self.maybe_prepared(seq, slot)

    def _watch_next_slot(self, seq: int) -> None:
        """The slot we execute next now has a proposal: if it stalls (votes lost), the
        retransmit timer re-sends our part (`on_retransmit_timeout`)."""
        if seq == self.log.last_executed + 1 and T_RETRANSMIT not in self.out.timers:
            self.out.set_timer(T_RETRANSMIT, self.config.retransmit_timeout_ns)

    def _ignore_normal(self, sender: int, msg: m.PrePrepare | m.Prepare | m.Commit) -> str | None:
        """The shared guard of the three normal-case messages (§4.2, §4.4)."""
        log = self.log
        if msg.view < log.view:
            self.views.hint_new_view(sender, msg.view)
            return "old view"
        if msg.view > log.view or not log.view_active:
            return self._buffer(sender, msg)
        if msg.seq <= log.h:
            return "below low watermark"
        if msg.seq > log.high:
            return self._buffer(sender, msg)
        return None

    def _buffer(self, sender: int, msg: Message) -> str:
        """Keep a message that may become acceptable (a later view, above the window)."""
        if not self.future.add(sender, msg):
            return "buffer full"
        self.views.notice_higher_view(sender, msg)
        return "buffered"

    def on_pre_prepare(self, sender: int, pp: m.PrePrepare) -> None:
        reason = self._ignore_normal(sender, pp) or self._ignore_pre_prepare(sender, pp)
        if reason:
            if reason != "buffered":
                self.out.drop(reason, self.ids[sender], pp.KIND)
            if reason == "duplicate pre-prepare":  # the primary is stuck on it: ours again
                self.out.send(sender, m.Prepare(pp.view, pp.seq, pp.digest, self.me))
                if self.log.slots[pp.seq].prepared:
                    self.out.send(sender, m.Commit(pp.view, pp.seq, pp.digest, self.me))
            if reason == "inadmissible request in batch":
                # Proof enough that the primary is faulty (admission is deterministic, and an
                # honest primary never proposes such a request): ask for a new view now.
                self.views.start_view_change(self.log.view + 1, "inadmissible-pre-prepare")
            return
        log = self.log
        slot = log.slot(pp.seq)
        slot.view, slot.digest, slot.pre_prepared = pp.view, pp.digest, True
        log.batches[pp.digest] = pp.batch
        self.transfer.missing_batches.pop(pp.digest, None)
        log.note_preprepared(pp.seq, pp.digest, pp.view)
        for req in pp.batch.requests:
            self.ordered[req.key] = pp.seq
            self.pending.pop(req.key, None)
            if not self.answered(req.key):
                self.wait_for(req.key)
        slot.prepares[self.me] = pp.digest
        self.out.bcast(m.Prepare(pp.view, pp.seq, pp.digest, self.me))
        self.out.trace("pre-prepare", view=pp.view, seq=pp.seq, digest=_hex(pp.digest),
                       requests=[_key_str(r.key) for r in pp.batch.requests])
        self._watch_next_slot(pp.seq)
        self.maybe_prepared(pp.seq, slot)

    def _ignore_pre_prepare(self, sender: int, pp: m.PrePrepare) -> str | None:
        if sender != primary_of(self.log.view, self.n):
            return "pre-prepare not from primary"
        slot = self.log.slots.get(pp.seq)
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
        return self.batch_refusal(pp.batch.requests)

    def on_prepare(self, sender: int, p: m.Prepare) -> None:
        log = self.log
        seq = p.seq
        # The common case in one test; `_ignore_normal` says why when it is not.
        if p.view != log.view or not log.view_active or seq <= log.h or seq > log.high:
            reason = self._ignore_normal(sender, p)
        else:
            reason = None
        if reason is None and sender == primary_of(p.view, self.n):
            reason = "prepare from primary"
        if reason:
            if reason != "buffered":
                self.out.drop(reason, self.ids[sender], p.KIND)
            return
        slot = log.slots.get(seq)
        if slot is None or slot.view != log.view:
            slot = log.slot(seq)
        prepares = slot.prepares
        if prepares.setdefault(sender, p.digest) != p.digest:
            self.out.drop("conflicting prepare", self.ids[sender], p.KIND)
            return
        # maybe_prepared's first tests, without the call (most votes come early or late)
        if not slot.prepared and slot.pre_prepared and len(prepares) >= self.q - 1:
            self.maybe_prepared(p.seq, slot)

    def maybe_prepared(self, seq: int, slot: Slot) -> bool:
        """prepared(m,v,n,i): pre-prepare plus q-1 (2f when n = 3f+1) matching PREPAREs from
        distinct backups (§4.2). The primary sends none, so it never counts."""
        if slot.prepared or not slot.pre_prepared:
            return False
        if len(slot.prepares) < self.q - 1:
            return False  # too few votes of any kind: skip the count
        primary = primary_of(slot.view, self.n)
        votes = sum(1 for r, d in slot.prepares.items() if d == slot.digest and r != primary)
        if votes < self.q - 1:
            return False
        slot.prepared = True
        log = self.log
        log.note_prepared(seq, slot.digest, slot.view)
        log.votes_dirty = True
        slot.commits[self.me] = slot.digest
        self.out.bcast(m.Commit(slot.view, seq, slot.digest, self.me))
        self.out.trace("prepared", view=slot.view, seq=seq, digest=_hex(slot.digest))
        self._maybe_committed(seq, slot)
        return True

    def on_commit(self, sender: int, c: m.Commit) -> None:
        log = self.log
        seq = c.seq
        if c.view != log.view or not log.view_active or seq <= log.h or seq > log.high:
            reason = self._ignore_normal(sender, c)
            if reason:
                if reason != "buffered":
                    self.out.drop(reason, self.ids[sender], c.KIND)
                return
        progress = self.commit_progress
        old = progress.get(sender, 0)
        if seq > old:
            progress[sender] = seq
            at = self._ahead_at
            if at >= 0:
                self._ahead += (seq > at) - (old > at)
            # (`_ahead_at` at our next slot, at most f peers ahead: not behind, no call)
            if (T_CATCH_UP not in self.out.timers
                    and (at != log.last_executed + 1 or self._ahead > self.f)
                    and self.behind_peers()):
                # f+1 replicas commit past a hole in our log: give the hole a moment to fill
                # (messages may be on their way), then fetch what we missed.
                self.catch_up_from = log.last_executed
                self.out.set_timer(T_CATCH_UP, self.config.fetch_timeout_ns)
        slot = log.slots.get(seq)
        if slot is None or slot.view != log.view:
            slot = log.slot(seq)
        commits = slot.commits
        if commits.setdefault(sender, c.digest) != c.digest:
            self.out.drop("conflicting commit", self.ids[sender], c.KIND)
            return
        # _maybe_committed's first test, without the call
        if not slot.committed and slot.prepared and len(commits) >= self.q:
            self._maybe_committed(c.seq, slot)

    def _maybe_committed(self, seq: int, slot: Slot) -> None:
        """committed-local: prepared plus q (2f+1) matching COMMITs, own included (§4.2)."""
        if slot.committed or not slot.prepared or len(slot.commits) < self.q:
            return
        votes = sum(1 for d in slot.commits.values() if d == slot.digest)
        if votes < self.q:
            return
        slot.committed = True
        self.out.trace("committed", view=slot.view, seq=seq, digest=_hex(slot.digest))
        self.maybe_execute()

    def behind_peers(self) -> bool:
        """f+1 peers sent COMMITs past our next slot, which has not committed here."""
        nxt = self.log.last_executed + 1
        slot = self.log.slots.get(nxt)
        if slot is not None and slot.committed:
            return False
        if self._ahead_at != nxt:
            self._ahead = sum(1 for seq in self.commit_progress.values() if seq > nxt)
            self._ahead_at = nxt
        return self._ahead >= self.f + 1

    def forget_commit_progress(self) -> None:
        self.commit_progress.clear()
        self._ahead_at = -1

    def requeue_dropped_proposals(self, assigned: dict[int, bytes]) -> None:
        """Requests of old-view proposals that the new view does not carry go back to the
        pending queue (a new primary proposes them again); `ordered` is rebuilt from O."""
        log = self.log
        for seq, slot in sorted(log.slots.items()):
            if seq > log.h and assigned.get(seq) != slot.digest:
                batch = log.batches.get(slot.digest)
                for req in batch.requests if batch is not None else ():
                    if not self.answered(req.key):
                        self.pending[req.key] = req
        self.ordered = {}
        for seq, digest in sorted(assigned.items()):
            batch = log.batches.get(digest)
            for req in batch.requests if batch is not None else ():
                self.ordered[req.key] = seq
                self.pending.pop(req.key, None)

    # =========================================================================================
    # Execution and replies (§4.2), checkpoints (§4.3)

    def maybe_execute(self) -> None:
        log = self.log
        while True:
            seq = log.last_executed + 1
            slot = log.slots.get(seq)
            if slot is None or not slot.committed:
                if slot is not None:
                    self._watch_next_slot(seq)
                return
            batch = log.batches.get(slot.digest)
            if batch is None:
                self.transfer.fetch_batch(slot.digest)
                return
            self.execute(seq, slot.view, slot.digest, batch)

    def execute(self, seq: int, view: int, digest: bytes, batch: m.Batch) -> None:
        log = self.log
        assert seq == log.last_executed + 1, (seq, log.last_executed)
        to_run: list[m.Request] = []
        for req in batch.requests:
            cached = self.replies.get((req.client, req.session))
            if cached is None or req.timestamp > cached.timestamp:
                to_run.append(req)
        results = self.sm.execute(to_run, BlockInfo(seq, view, batch.timestamp_ns))
        self.costs.execute += len(to_run)
        assert len(results) == len(to_run)
        for req, result in zip(to_run, results, strict=True):
            cached = CachedReply(req.timestamp, result)
            self.replies[(req.client, req.session)] = cached
            self._send_reply(req.client, req.session, cached)
        for req in batch.requests:
            self.pending.pop(req.key, None)
            self.ordered.pop(req.key, None)
            self.waiting.pop(req.key, None)
        log.last_executed = seq
        committed = log.executed[seq] = m.CommittedBatch(seq, view, batch)
        if self.config.durable:
            # Before the replies above leave (Persist effects go first in the step's output).
            self.out.persist("block", durable.block_record(committed), digest)
        keys = [_key_str(r.key) for r in batch.requests]
        # to_run is a subsequence of the batch: all of it when as long (one list, read only)
        self.out.trace("execute", view=view, seq=seq, digest=_hex(digest),
                       timestamp_ns=batch.timestamp_ns, requests=keys,
                       executed=keys if len(to_run) == len(keys)
                       else [_key_str(r.key) for r in to_run])
        self.catch_up_tried = False
        if to_run and log.view_active:
            self.views.attempts = 0
        if seq % self.config.checkpoint_interval == 0:
            self.checkpoints.take(seq, self.replies)
        if self.timed_request is not None and self.timed_request not in self.waiting:
            # §4.4: the timer stops when the request it was started for executes, and starts
            # again for another request still waiting. Other requests executing do not reset
            # it: a primary that serves everyone but one client is still caught.
            self.restart_view_change_timer()
        if self.is_primary() and log.view_active:
            self.maybe_propose()

    def restore_snapshot(self, snap: bytes, digest: bytes) -> None:
        """Replace the state machine and reply cache by a snapshot's whose checkpoint digest
        is `digest` (ValueError, nothing replaced, if it is malformed or its digest differs)."""
        state, replies = read_snapshot(snap)
        self.sm.restore(state, lambda d: checkpoint_digest(d, replies) == digest)
        self.replies = replies

    # =========================================================================================
    # Timers: retransmission (§6.1), view change (§4.4), catching up

    def on_retransmit_timeout(self) -> None:
        """The next slot has not committed for a whole period: re-send our part of it (the
        paper's implementation retransmits on loss too, §6.1). Receivers that already have
        a message ignore the copy; one that lost it can now complete the certificate."""
        log = self.log
        if not log.view_active:
            self.views.retransmit()
            return
        seq = log.last_executed + 1
        slot = log.slots.get(seq)
        if slot is None or slot.committed:
            self.stuck_seq = 0
            return
        if self.stuck_seq == seq:
            batch = log.batches.get(slot.digest)
            if slot.view == log.view and slot.pre_prepared:
                primary = self.is_primary()
                if primary and batch is not None and batch.requests:
                    self.out.bcast(m.PrePrepare(slot.view, seq, slot.digest, batch))
                elif not primary:
                    self.out.bcast(m.Prepare(slot.view, seq, slot.digest, self.me))
            if slot.prepared:
                self.out.bcast(m.Commit(slot.view, seq, slot.digest, self.me))
            self.out.trace("retransmit", seq=seq, view=slot.view)
        self.stuck_seq = seq
        self.out.set_timer(T_RETRANSMIT, self.config.retransmit_timeout_ns)

    def wait_for(self, key: RequestKey) -> None:
        self.waiting[key] = None
        # In a view change the timer is the NEW-VIEW wait, run only with 2f+1 VIEW-CHANGEs
        # (§4.5.2 rule 1): no request starts it; entering the view restarts it.
        if T_VIEW_CHANGE not in self.out.timers and self.log.view_active:
            self._arm_view_change_timer(key)

    def _arm_view_change_timer(self, key: RequestKey) -> None:
        self.timed_request = key
        self.timer_mark = self.log.last_executed
        self.out.set_timer(T_VIEW_CHANGE, self.views.timeout_ns())

    def restart_view_change_timer(self) -> None:
        """(Re)start the timer for the oldest request still waiting, or stop it (§4.4)."""
        if not self.log.view_active:
            return
        if self.waiting:
            self._arm_view_change_timer(next(iter(self.waiting)))
        else:
            self.timed_request = None
            self.out.cancel_timer(T_VIEW_CHANGE)

    def on_view_change_timeout(self) -> None:
        log = self.log
        stalled = log.last_executed == self.timer_mark
        if log.view_active and stalled and self.behind_peers() and not self.catch_up_tried:
            # Others are committing past a gap in our log: perhaps only we lost messages. Try
            # state transfer once before blaming the primary; if that brings nothing (nobody
            # executed past the gap either), the next expiry asks for a view change.
            self.catch_up_tried = True
            self.transfer.fetch_state()
            self.out.set_timer(T_VIEW_CHANGE, self.views.timeout_ns())
            return
        # The trace says which timer expired: a request's (which one) or the NEW-VIEW wait.
        timed, self.timed_request = self.timed_request, None
        if not log.view_active:
            self.views.start_view_change(log.view + 1, "new-view-timer")
        elif timed is not None:
            self.views.start_view_change(log.view + 1, "request-timer", request=_key_str(timed))
        else:
            self.views.start_view_change(log.view + 1, "request-timer")

    def on_catch_up_timeout(self) -> None:
        """Fetch only when we made no progress while the timer ran. Under pipelining f+1
        peers are nearly always a few COMMITs ahead of our next slot; that is not a hole
        unless execution stood still for the whole period (it would otherwise fetch state
        every period in fault-free runs)."""
        if not self.behind_peers():
            return
        if self.log.last_executed > self.catch_up_from:
            self.catch_up_from = self.log.last_executed
            self.out.set_timer(T_CATCH_UP, self.config.fetch_timeout_ns)
            return
        self.transfer.fetch_state()


#: How many digests and request keys `_hex` and `_key_str` remember before starting afresh.
TEXTS_KEPT = 4096
# digest -> its hex, request key -> "client/session/timestamp": the texts the trace events
# carry, pure functions of their keys, so remembering them changes speed, never results. A
# replica names each batch digest in four events and each request in three; in a simulated
# run (one process) every replica names the same ones, so they all hold one copy of each text
# instead of their own (the run keeps its events: 4n copies per batch otherwise).
_hexes: dict[bytes, str] = {}
_key_strs: dict[RequestKey, str] = {}


def _hex(digest: bytes) -> str:
    text = _hexes.get(digest)
    if text is None:
        if len(_hexes) >= TEXTS_KEPT:
            _hexes.clear()
        text = _hexes[digest] = digest.hex()
    return text


def _key_str(key: RequestKey) -> str:
    text = _key_strs.get(key)
    if text is None:
        if len(_key_strs) >= TEXTS_KEPT:
            _key_strs.clear()
        text = _key_strs[key] = f"{key[0]}/{key[1]}/{key[2]}"
    return text
