"""The replica: `Replica.step(event, now_ns) -> [Effect]`, a coordinator over the parts of
node.pbft.

Why this exists: runtimes (the simulator on virtual time, the real node on asyncio) need one
object to feed events to. It authenticates what arrives, hands each message to the part that
handles its type (a table: message type -> handler) and each timer to its part, returns the
step's effects with the durable records first, and is the one place the parts reach each other
through when a step crosses from one sub-protocol into another (`CheckpointHost`,
`TransferHost`, `ViewChangeHost`).

What it must not know: any protocol rule beyond authentication (who may send what is checked
here; whether a message is acceptable is for its handler to say).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final, cast

from node import messages as m
from node.config import Config
from node.crypto import Keyring
from node.envelope import decode_authenticated, open_envelope
from node.events import Effect, Event, Persist, Receive, Start, Timeout
from node.membership import Membership
from node.messages import (
    DecodeError,
    Message,
    NewView,
    Request,
)
from node.pbft import durable
from node.pbft.checkpoint import CachedReply, Checkpoints
from node.pbft.log import Future, Log, Slot
from node.pbft.normal_case import NormalCase
from node.pbft.outbox import T_BATCH, T_CATCH_UP, T_FETCH, T_RETRANSMIT, T_VIEW_CHANGE, Outbox
from node.pbft.transfer import StateTransfer
from node.pbft.view_change import ViewChanges
from node.quorum import primary_of
from node.statemachine import StateMachine

# Message types the receive path tests every message against, as Final names: compiled, a
# Final module constant is a C static, where any other module-level name is a dictionary
# lookup on every use.
_REQUEST: Final = Request
_NEW_VIEW: Final = NewView
_PRE_PREPARE: Final = m.PrePrepare
_PREPARE: Final = m.Prepare
_COMMIT: Final = m.Commit

__all__ = ["Replica"]


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
        self.config = cfg = config or Config()
        self._durable: Final = cfg.durable  # read at the end of every step
        self.keys = keyring
        self.costs = keyring.costs
        self.sm = state_machine
        self.id = replica_id
        self.me = index
        self.n = membership.n
        self.f = membership.f
        self.q = membership.q
        self.ids = ids = membership.node_ids
        self.client_ids = frozenset(c.id for c in membership.clients)
        self._mac_prefixes = tuple(r.id.encode() + b"\x00" for r in membership.nodes)
        # The other replicas by id: one lookup tells a peer from a client or a stranger.
        self._peers = {r: i for i, r in enumerate(ids) if i != index}
        # the parts
        self.out = out = Outbox(replica_id, index, ids, keyring)
        self.dropped = out.dropped  # drop counters by reason (read by metrics and tests)
        self.timers = out.timers
        self.log = log = Log(cfg.watermark_window)
        if cfg.durable:  # the `votes` record is written at every vote: keep its texts
            log.track_vote_texts()
        self.future = Future(cfg.max_buffered_messages, self.n)
        self.checkpoints = Checkpoints(self, out, log, keyring, state_machine, ids, index,
                                       self.q, cfg)
        self.transfer = StateTransfer(self, out, log, self.checkpoints, self.costs, ids, index,
                                      self.f, cfg)
        self.views = ViewChanges(self, out, log, self.checkpoints, self.transfer, keyring, ids,
                                 index, self.f, self.q, cfg)
        self.normal = NormalCase(out, log, self.future, self.checkpoints, self.transfer,
                                 self.views, keyring, state_machine, self.client_ids, ids, index,
                                 self.f, self.q, cfg)
        # The initial state is checkpoint 0, stable by definition (it needs no proof).
        self.checkpoints.remember(0, self.normal.replies)
        self.checkpoints.stable_replies = self.checkpoints.own_replies[0]
        self._handlers: dict[type[Message], Callable[[int, Any], None]] = {
            m.PrePrepare: self.normal.on_pre_prepare,
            m.Prepare: self.normal.on_prepare,
            m.Commit: self.normal.on_commit,
            m.Checkpoint: self.checkpoints.on_checkpoint,
            m.ViewChange: self.views.on_view_change,
            m.NewView: self.views.on_new_view,
            m.FetchBatch: self.transfer.on_fetch_batch,
            m.BatchData: self.transfer.on_batch_data,
            m.FetchState: self.transfer.on_fetch_state,
            m.StateData: self.transfer.on_state_data,
        }
        self._timer_handlers: dict[str, Callable[[], None]] = {
            T_BATCH: self.normal.on_batch_timeout,
            T_VIEW_CHANGE: self.normal.on_view_change_timeout,
            T_FETCH: self.transfer.on_fetch_timeout,
            T_RETRANSMIT: self.normal.on_retransmit_timeout,
            T_CATCH_UP: self.normal.on_catch_up_timeout,
        }

    # =========================================================================================
    # Entry point

    def step(self, event: Event, now_ns: int) -> list[Effect]:
        """Feed one event at time `now_ns`; return the effects to carry out, in order."""
        if type(event) is Receive:
            return self.receive(event.data, now_ns)
        out = self.out
        out.now_ns = now_ns
        effects: list[Effect] = []
        out.effects = effects
        if type(event) is Timeout:
            self.timers.discard(event.key)
            handler = self._timer_handlers.get(event.key)
            if handler is not None:
                handler()
        elif type(event) is Start:
            self._on_start(event.recovering)
        else:
            raise TypeError(f"unknown event {event!r}")
        return self._finish(effects)

    def _persist_first(self, effects: list[Effect]) -> None:
        """Durable mode: the step's Persist records go before its other effects."""
        out = self.out
        log = self.log
        if log.votes_dirty:
            # The seqs whose votes changed, then the head (view, h) if it changed: storage drops
            # the rows at or below h when a head comes (node.pbft.durable).
            persisted = out.persisted
            for seq in sorted(log.dirty_seqs):
                row = durable.vote_row(log, seq)
                if row is not None:
                    persisted.append(Persist("vote", row, b"", seq))
            log.dirty_seqs.clear()
            head = durable.votes_head(log)
            if head != log.head_written:  # the view or h moved (rarely: not at every vote)
                persisted.append(Persist("votes", head, b"", log.h))
                log.head_written = head
            log.votes_dirty = False
        if out.persisted:
            effects[:0] = out.persisted
            out.persisted = []

    # What observers (metrics, the API, tests) read.

    @property
    def view(self) -> int:
        return self.log.view

    @property
    def view_active(self) -> bool:
        """False while a view change is under way (VIEW-CHANGE sent, no NEW-VIEW yet)."""
        return self.log.view_active

    @property
    def h(self) -> int:
        """The stable checkpoint: the low watermark."""
        return self.log.h

    @property
    def last_executed(self) -> int:
        return self.log.last_executed

    @property
    def next_seq(self) -> int:
        return self.log.next_seq

    @property
    def pending(self) -> dict[tuple[str, int, int], m.Request]:
        return self.normal.pending

    @property
    def replies(self) -> dict[tuple[str, int], CachedReply]:
        return self.normal.replies

    @property
    def primary(self) -> int:
        return primary_of(self.log.view, self.n)

    @property
    def is_primary(self) -> bool:
        return self.primary == self.me

    # =========================================================================================
    # Receiving: decode, authenticate, dispatch

    def receive(self, data: bytes, now_ns: int) -> list[Effect]:
        """`step(Receive(data), now_ns)` without building the event: the runtimes call this
        once per message.

        Authenticate before decoding: a replica's message is decoded only once its MAC
        holds, so forged bytes cost one MAC, never a parse. A client's REQUEST carries a
        signature instead, which normal_case checks on the decoded request."""
        out = self.out
        out.now_ns = now_ns
        effects: list[Effect] = []
        out.effects = effects
        costs = self.costs
        costs.messages += 1
        costs.bytes += len(data)
        # A message sealed in this process for us (a simulation): its sender, payload and
        # MAC check are known from where it was sealed (Keyring.open_sealed).
        opened = self.keys.open_sealed(data)
        index = None if opened is None else self._peers.get(opened[0])
        if opened is not None and index is not None:
            costs.mac += 1
            sender, payload = opened
        else:
            try:
                sender, payload, mac = open_envelope(data)
            except DecodeError:
                out.drop("malformed")
                return self._finish(effects)
            index = self._peers.get(sender)
            if index is None:
                self._on_receive_other(sender, payload)
                return self._finish(effects)
            if not self.keys.check_mac(sender, self._mac_prefixes[index] + payload, mac):
                out.drop("bad MAC", sender, _kind_of(payload))
                return self._finish(effects)
        try:
            msg = decode_authenticated(payload)
        except DecodeError:
            out.drop("malformed")
            return self._finish(effects)
        kind = type(msg)
        # The three messages of every batch are handed over by direct calls (compiled, a
        # call through `_handlers`' bound methods boxes its arguments); the checks are
        # those of the general path below.
        if kind is _PREPARE or kind is _COMMIT:
            vote = cast("m.Prepare | m.Commit", msg)
            if vote.replica != index:
                out.drop("replica field does not match sender", sender, msg.KIND)
            elif kind is _PREPARE:
                self.normal.on_prepare(index, cast(m.Prepare, msg))
            else:
                self.normal.on_commit(index, cast(m.Commit, msg))
        elif kind is _PRE_PREPARE:  # no replica field: the primary is the view's
            self.normal.on_pre_prepare(index, cast(m.PrePrepare, msg))
        elif kind is _REQUEST:
            self.normal.on_request(msg, False)  # type: ignore[arg-type]
        elif getattr(msg, "replica", index) != index and kind is not _NEW_VIEW:
            out.drop("replica field does not match sender", sender, msg.KIND)
        else:
            handler = self._handlers.get(kind)
            if handler is None:
                out.drop("unexpected message type", sender, msg.KIND)
            else:
                handler(index, msg)
        out.effects = []  # `_finish`, inline: this is the end of every message's step
        if self._durable:
            self._persist_first(effects)
        return effects

    def _finish(self, effects: list[Effect]) -> list[Effect]:
        """The end of a step: later effects go to a new list; Persist records go first."""
        self.out.effects = []
        if self._durable:
            self._persist_first(effects)
        return effects

    def _on_receive_other(self, sender: str, payload: bytes) -> None:
        """An envelope not from another replica: a client's REQUEST (signed, so its envelope
        carries no MAC), or a stranger's (or our own id's) message, dropped."""
        if sender not in self.client_ids:
            self.out.drop("unknown sender", sender, _kind_of(payload))
            return
        try:
            req = m.decode(payload)
        except DecodeError:
            self.out.drop("malformed")
            return
        if type(req) is not m.Request:
            self.out.drop("unknown sender", sender, req.KIND)
        elif req.client != sender:
            self.out.drop("request client does not match sender", sender, req.KIND)
        else:
            self.normal.on_request(req, True)

    def _dispatch(self, sender: int, msg: Message) -> None:
        handler = self._handlers.get(type(msg))
        if handler is None:
            self.out.drop("unexpected message type", self.ids[sender], msg.KIND)
            return
        handler(sender, msg)

    def _on_start(self, recovering: bool) -> None:
        self.timers.clear()
        if recovering:
            self.out.trace("recovering", last_executed=self.log.last_executed,
                           view=self.log.view)
            self.transfer.fetch_state(persistent=True)
        self.normal.restart_view_change_timer()
        self.views.maybe_arm_new_view_timer()
        if self.is_primary and self.log.view_active:
            self.normal.maybe_propose()

    def replay_future(self) -> None:
        """Hand buffered messages to their handlers again (the view or window moved); those
        of views we have left are dropped."""
        if not self.future.messages:
            return
        for sender, msg in self.future.take():
            if getattr(msg, "view", 0) < self.log.view:
                continue
            self._dispatch(sender, msg)

    # =========================================================================================
    # Where one part reaches another (CheckpointHost, TransferHost, ViewChangeHost)

    def fetch_state(self, repair: int = 0) -> None:
        self.transfer.fetch_state(repair=repair)

    def maybe_propose(self) -> None:
        self.normal.maybe_propose()

    def collect_garbage(self) -> None:
        """Discard everything at or below the stable checkpoint (§4.3): the log stays within
        the watermark window however long the run."""
        h = self.log.h
        self.log.collect_garbage()
        self.checkpoints.collect_garbage(h)
        self.transfer.collect_garbage(h)

    @property
    def latest_new_view(self) -> m.NewView | None:
        return self.views.latest_new_view

    def valid_request(self, req: m.Request) -> bool:
        return self.normal.valid_request(req)

    def batch_refusal(self, requests: tuple[m.Request, ...]) -> str | None:
        return self.normal.batch_refusal(requests)

    def execute(self, seq: int, view: int, digest: bytes, batch: m.Batch) -> None:
        self.normal.execute(seq, view, digest, batch)

    def maybe_execute(self) -> None:
        self.normal.maybe_execute()

    def restore_snapshot(self, snapshot: bytes, digest: bytes) -> None:
        self.normal.restore_snapshot(snapshot, digest)

    def forget_answered(self) -> None:
        self.normal.forget_answered()

    def accept_new_view(self, nv: m.NewView) -> None:
        self.views.accept_new_view(nv)

    def requeue_dropped_proposals(self, assigned: dict[int, bytes]) -> None:
        self.normal.requeue_dropped_proposals(assigned)

    def maybe_prepared(self, seq: int, slot: Slot) -> bool:
        return self.normal.maybe_prepared(seq, slot)

    def restart_view_change_timer(self) -> None:
        self.normal.restart_view_change_timer()

    def forget_commit_progress(self) -> None:
        self.normal.forget_commit_progress()

    # =========================================================================================
    # Durability (real mode)

    def restore_durable(self, votes: bytes | None, checkpoint: bytes | None,
                        blocks: Iterable[bytes], stable: bytes | None = None) -> None:
        """Rebuild a freshly constructed replica from what it persisted before a crash
        (node.pbft.durable). Call before Start(recovering). Raises ValueError if the records
        are malformed or do not verify."""
        self.out.effects = []
        durable.restore(self.log, self.checkpoints, self.normal, votes, checkpoint, blocks,
                        stable)
        self.out.effects = []
        self.out.persisted = []


def _kind_of(payload: bytes) -> str:
    """The message kind a payload's tag claims, for counting drops without decoding it."""
    cls = m.message_class(payload[0]) if payload else None
    return cls.KIND if cls is not None else "?"

