"""Checkpoints and garbage collection (OSDI '99 §4.3).

Why this exists: the log must stay within the watermark window however long a run lasts. A
replica takes a checkpoint every `checkpoint_interval` executed sequence numbers, signs its
digest and multicasts a CHECKPOINT; q matching signed CHECKPOINTs make it stable, which moves
the low watermark and lets everything at or below it go. The proof (those q messages) is what
VIEW-CHANGEs, NEW-VIEWs and state transfer carry, so its check lives here too, as does the
snapshot format.

Cost linear in run length: a checkpoint's digest is H(state machine digest, reply cache
digest) (`checkpoint_digest`); the state machine keeps its digest per write (O(1)) and the
reply cache (one entry per client session) is hashed sorted. Taking a checkpoint serialises
nothing: the state machine only remembers the state at `seq` (`StateMachine.checkpoint`, an
undo log) and we keep a copy of the reply cache. The snapshot bytes of the stable checkpoint
are built only when asked for (`stable_chunks`: a FETCH-STATE, or persisting it in durable
mode), once per stable checkpoint, and cut into chunks of `CHUNK_BYTES` with their hashes.
Remembered states below the stable checkpoint are released as it moves. Equal states give
equal digests and equal snapshot bytes on every replica, whatever their histories.

What it must not know: how batches are agreed on or executed, view changes, how state is
fetched. What it needs from the rest of the replica is `CheckpointHost`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Protocol

from node import messages as m
from node.config import Config
from node.crypto import Keyring
from node.pbft import durable
from node.pbft.log import Log
from node.pbft.outbox import Outbox
from node.quorum import primary_of
from node.statemachine import StateMachine

__all__ = ["CHUNK_BYTES", "CachedReply", "CheckpointHost", "Checkpoints", "checkpoint_digest",
           "read_snapshot", "replies_digest", "snapshot_bytes"]

CHUNK_BYTES = 1024 * 1024
"""State transfer moves snapshots in chunks of at most this many bytes (one STATE-DATA each),
so no state size is capped by node.messages.MAX_MESSAGE_BYTES."""

Replies = dict[tuple[str, int], "CachedReply"]


@dataclass(frozen=True, slots=True)
class CachedReply:
    """The last reply to one client session: part of the replicated (checkpointed) state, so
    it holds nothing replica-specific. Replies carry the sender's current view (§4.1: so
    clients learn the primary), not the view of execution, which replicas may disagree on."""

    timestamp: int
    result: bytes


def _reply_rows(replies: Replies) -> bytes:
    rows = sorted([c, s, r.timestamp, r.result.hex()] for (c, s), r in replies.items())
    return json.dumps(rows, separators=(",", ":")).encode()


def replies_digest(replies: Replies) -> bytes:
    """The reply cache's part of a checkpoint digest (read receipts carry it)."""
    return hashlib.sha256(_reply_rows(replies)).digest()


def checkpoint_digest(sm_digest: bytes, replies: Replies) -> bytes:
    """The digest a CHECKPOINT carries: the state machine's digest and the reply cache's."""
    return hashlib.sha256(b"medbft-checkpoint/1" + sm_digest + replies_digest(replies)).digest()


def snapshot_bytes(state: bytes, replies: Replies) -> bytes:
    """Canonical snapshot: the state machine's plus the reply cache (exactly-once state)."""
    return len(state).to_bytes(8, "big") + state + _reply_rows(replies)


def read_snapshot(data: bytes) -> tuple[bytes, dict[tuple[str, int], CachedReply]]:
    """(state machine snapshot, reply cache) of a `snapshot`; ValueError if malformed."""
    size = int.from_bytes(data[:8], "big")
    state, rest = data[8:8 + size], data[8 + size:]
    try:
        rows = json.loads(rest)
        replies = {(str(c), int(s)): CachedReply(int(t), bytes.fromhex(r))
                   for c, s, t, r in rows}
    except (ValueError, TypeError) as exc:
        raise ValueError(f"malformed reply cache in snapshot: {exc}") from exc
    return state, replies


class CheckpointHost(Protocol):
    """What checkpointing asks of the rest of the replica."""

    def fetch_state(self, repair: int = 0) -> None:
        """We are behind (or our state differs): get the stable state from others.
        `repair`: our own checkpoint at that seq disagrees with a quorum's, so our state is
        bad: install theirs even though we executed that far."""

    def replay_future(self) -> None:
        """The window moved: buffered messages may be acceptable now."""

    def maybe_propose(self) -> None:
        """The window moved: a primary may propose again."""

    def collect_garbage(self) -> None:
        """Discard everything at or below the new low watermark, in every part."""


class Checkpoints:
    """Signed CHECKPOINTs by seq and sender, our own checkpoints' digests (and reply caches),
    and the stable checkpoint: its proof, whether we hold its state, and its chunks once
    built."""

    def __init__(self, host: CheckpointHost, out: Outbox, log: Log, keys: Keyring,
                 sm: StateMachine, ids: tuple[str, ...], me: int, q: int,
                 config: Config) -> None:
        self.host = host
        self.sm = sm
        self.out = out
        self.log = log
        self.keys = keys
        self.costs = keys.costs
        self.ids = ids
        self.me = me
        self.n = len(ids)
        self.q = q
        self.interval = config.checkpoint_interval
        self.keep = config.watermark_window // config.checkpoint_interval + 2
        self.durable = config.durable
        self.durable_gap = config.durable_snapshot_every * config.checkpoint_interval
        """Seqs between two snapshots written to disk (durable mode). A snapshot holds the
        whole state (0.47 s and 18 MiB for a ledger of 100,000 transactions), so writing one
        at every stable checkpoint cost a long-lived node more than its requests did; every
        stable checkpoint's proof is still written (`stable` record), so a restart that
        replays the blocks since the last snapshot comes back at the latest stable one."""
        self.durable_seq = 0
        """The stable checkpoint whose snapshot is on disk (0: none; a restart replays from
        the first block)."""
        self.votes: dict[int, dict[int, m.Checkpoint]] = {}
        self.own: dict[int, bytes] = {}
        """Our checkpoints' digests by seq (the state machine remembers their states)."""
        self.own_replies: dict[int, Replies] = {}
        self.stable_proof: tuple[m.Checkpoint, ...] = ()
        self.stable_seq = 0
        self.stable_replies: Replies | None = None
        """The reply cache at the stable checkpoint; None when we do not hold its state."""
        self._chunks: tuple[tuple[bytes, ...], tuple[bytes, ...]] | None = None

    def remember(self, seq: int, replies: Replies) -> bytes:
        """The current state is checkpoint `seq`: remember it; return its digest."""
        self.sm.checkpoint(seq)
        digest = checkpoint_digest(self.sm.digest(), replies)
        self.own[seq] = digest
        self.own_replies[seq] = dict(replies)
        return digest

    def take(self, seq: int, replies: Replies) -> None:
        """After executing `seq` (a multiple of the interval): sign and multicast our
        CHECKPOINT for the current state, whose reply cache is `replies`."""
        self.costs.digest += 1
        digest = self.remember(seq, replies)
        unsigned = m.Checkpoint(seq, digest, self.me, b"")
        cp = m.replace(unsigned, signature=self.keys.sign(m.encode(unsigned)))
        self.votes.setdefault(seq, {})[self.me] = cp
        self.out.bcast(cp)
        self.out.trace("checkpoint", seq=seq, digest=digest.hex())
        self.maybe_stable(seq)

    def valid_checkpoint(self, cp: m.Checkpoint) -> bool:
        if not 0 <= cp.replica < self.n or len(cp.digest) != 32:
            return False
        return self.keys.verify(self.ids[cp.replica], cp.unsigned(), cp.signature)

    def valid_proof(self, seq: int, proof: tuple[m.Checkpoint, ...]) -> bool:
        """`proof` shows the checkpoint at `seq` stable: q matching CHECKPOINTs, signed by
        distinct replicas (seq 0, the initial state, needs none)."""
        if seq == 0:
            return not proof
        if seq % self.interval:
            return False
        signers = {cp.replica for cp in proof}
        if len(signers) != len(proof) or len(proof) < self.q:
            return False
        digest = proof[0].digest
        return all(
            cp.seq == seq and cp.digest == digest and self.valid_checkpoint(cp) for cp in proof
        )

    def on_checkpoint(self, sender: int, cp: m.Checkpoint) -> None:
        if cp.seq <= self.log.h:
            return  # old news; not an error
        if cp.seq % self.interval != 0:
            self.out.drop("checkpoint at a non-checkpoint sequence number", self.ids[sender],
                          cp.KIND)
            return
        if not self.valid_checkpoint(cp):
            self.out.drop("bad checkpoint signature", self.ids[sender], cp.KIND)
            return
        self.votes.setdefault(cp.seq, {}).setdefault(sender, cp)
        self._bound(sender)
        self.maybe_stable(cp.seq)

    def _bound(self, sender: int) -> None:
        """Each sender's CHECKPOINTs above h: at most as many as the window holds (+2)."""
        seqs = sorted(s for s, by in self.votes.items() if sender in by)
        for s in seqs[:-self.keep]:
            del self.votes[s][sender]

    def maybe_stable(self, seq: int) -> None:
        """A checkpoint is stable on q (2f+1) matching signed CHECKPOINTs (§4.3)."""
        log = self.log
        if seq <= log.h:
            return
        proof = matching_quorum(self.votes.get(seq, {}), self.q)
        if proof is None:
            return
        digest = proof[0].digest
        if self.own.get(seq) == digest:
            self.make_stable(seq, proof)
        elif log.last_executed < seq:
            self.out.trace("behind", seq=seq, last_executed=log.last_executed)
            self.host.fetch_state()
        else:
            # Our state at seq differs from what q replicas signed: it was damaged (tampered
            # with, or a bad disk), since executing is deterministic. Repair it by transfer.
            self.out.trace("checkpoint mismatch", seq=seq)
            self.host.fetch_state(repair=seq)

    def make_stable(self, seq: int, proof: tuple[m.Checkpoint, ...],
                    snap: bytes | None = None) -> None:
        """Adopt a stable checkpoint whose state we hold (`snap`: its snapshot bytes, if we
        have them already); then carry on with what waited for the window to move."""
        self.advance_stable(seq, proof, True, snap)
        self.host.replay_future()
        log = self.log
        if primary_of(log.view, self.n) == self.me and log.view_active:
            self.host.maybe_propose()

    def advance_stable(self, seq: int, proof: tuple[m.Checkpoint, ...], held: bool,
                       snap: bytes | None = None, persist: bool = True) -> None:
        """Move the low watermark to a proven checkpoint and collect garbage; no other side
        effects (callers decide whether buffered messages and proposals may follow). `held`:
        we hold that checkpoint's state (remembered by the state machine). `persist`: write
        the durable records (False while rebuilding from them)."""
        self.log.move_window(seq)
        self.stable_proof = proof
        self.stable_seq = seq
        self.stable_replies = self.own_replies.get(seq) if held else None
        self._chunks = None
        self.sm.release(seq)
        if snap is not None and self.stable_replies is not None:
            self._chunks = _cut(snap)
        self.host.collect_garbage()
        if self.durable and persist and self.stable_replies is not None:
            # A state that came from outside (a transfer: `snap`) is written at once, since no
            # block of ours leads to it; one we executed, once `durable_gap` seqs have passed
            # since the snapshot on disk. The proof goes to disk every time.
            if snap is not None or seq >= self.durable_seq + self.durable_gap:
                self.out.persist("checkpoint", durable.checkpoint_record(
                    seq, proof, self.stable_snapshot(), self.log.view, self.me))
                self.durable_seq = seq
            self.out.persist("stable", durable.stable_record(seq, proof, self.log.view,
                                                             self.me))
        self.out.trace("stable", seq=seq, digest=proof[0].digest.hex())

    @property
    def holds_stable(self) -> bool:
        """Do we hold the stable checkpoint's state (can we serve it)?"""
        return self.stable_replies is not None

    def stable_chunks(self) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
        """(chunks, their hashes) of the stable checkpoint's snapshot, built on first use."""
        if self._chunks is None:
            assert self.stable_replies is not None, "the stable state is not held"
            self._chunks = _cut(snapshot_bytes(self.sm.snapshot_at(self.stable_seq),
                                               self.stable_replies))
            self.costs.digest += len(self._chunks[0])
        return self._chunks

    def stable_snapshot(self) -> bytes:
        return b"".join(self.stable_chunks()[0])

    def collect_garbage(self, h: int) -> None:
        for table in (self.own, self.own_replies, self.votes):
            for seq in [s for s in table if s <= h]:
                del table[seq]  # type: ignore[attr-defined]


def _cut(snap: bytes) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    chunks = tuple(snap[i:i + CHUNK_BYTES] for i in range(0, len(snap), CHUNK_BYTES)) or (b"",)
    return chunks, tuple(m.digest_of(c) for c in chunks)


def matching_quorum(by_replica: dict[int, m.Checkpoint],
                    q: int) -> tuple[m.Checkpoint, ...] | None:
    """q CHECKPOINTs with one digest (the smallest such digest), in replica order; or None."""
    groups: dict[bytes, list[m.Checkpoint]] = {}
    for r in sorted(by_replica):
        cp = by_replica[r]
        groups.setdefault(cp.digest, []).append(cp)
    for digest in sorted(groups):
        if len(groups[digest]) >= q:
            return tuple(groups[digest][:q])
    return None
