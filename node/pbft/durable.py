"""Durable state (real mode): the records a replica persists, and rebuilding it from them.

Why this exists: a replica that restarts after a crash must not contradict what it said
before. With `Config(durable=True)` it emits `Persist` effects, first in each step's output so
they are on disk before anything the step sends:
- `votes` and `vote`: the view and, one record per seq, every (seq, digest, view) it
  pre-prepared or prepared above the stable checkpoint. Without them a restarted replica
  could vote for a different digest at a (view, seq) it already voted on, which is what a
  faulty replica does. A step writes a `vote` record for each seq whose votes it changed, and
  the `votes` head (view, whether it is installed, and h) when that changed; storage keeps one
  row per seq and drops those at or below h, and `join_votes` puts them back together as the
  one record `restore` reads (the bytes `votes_record` encodes from the log). Writing the
  whole window at every vote, as this once did, wrote up to 20 KB per vote at 1 request per
  batch (about 2.5 records per request per replica): about a sixth of a real node's CPU per
  request at one request in flight (docs/benchmarks.md).
- `checkpoint`: a stable checkpoint's snapshot with its proof (a STATE-DATA message holding
  the whole snapshot as its one chunk), written every `durable_snapshot_every` stable
  checkpoints and whenever one is reached by state transfer; a simulated run (not durable)
  never builds it.
- `stable`: the latest stable checkpoint's proof alone (a STATE-DATA with no chunk), written
  at every stable checkpoint, so that a restart which replays the blocks since the last
  snapshot comes back at the latest stable checkpoint, inside the window its peers use.
- `block`: each executed batch (a COMMITTED-BATCH message), replayed in order on restart.
`restore` rebuilds a freshly constructed replica from them (node.storage keeps them).

What it must not know: storage (files, SQLite), the runtime, or how the records are used
beyond rebuilding state: the replica then starts recovering and fetches what it missed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Protocol

from node import messages as m
from node.pbft.log import Log

__all__ = ["block_record", "checkpoint_record", "join_votes", "restore", "stable_record",
           "vote_row", "votes_head", "votes_record"]


def votes_record(log: Log) -> bytes:
    """The whole votes record, encoded from the log: view, whether it is installed, h, and
    the votes above h, as compact JSON. What `restore` reads and what `join_votes` rebuilds
    from the records a replica writes (tests/test_storage.py compares the two)."""
    h = log.h
    prepared = [[e.seq, e.digest.hex(), e.view] for s, e in sorted(log.prepared.items()) if s > h]
    preprepared = [[s, d.hex(), v] for s in sorted(log.preprepared) if s > h
                   for d, v in sorted(log.preprepared[s].items())]
    return json.dumps({"view": log.view, "active": log.view_active, "h": h,
                       "prepared": prepared, "preprepared": preprepared},
                      separators=(",", ":")).encode()


def votes_head(log: Log) -> bytes:
    """The `votes` record: the view, whether it is installed, and h."""
    active = "true" if log.view_active else "false"
    return f'{{"view":{log.view},"active":{active},"h":{log.h}}}'.encode()


def vote_row(log: Log, seq: int) -> bytes | None:
    """The `vote` record of one seq: what this replica prepared and pre-prepared there, from
    the log's kept texts (durable mode); None once the seq is at or below h (collected)."""
    prepared_text, preprepared_text = log.prepared_text, log.preprepared_text
    assert prepared_text is not None and preprepared_text is not None, "durable mode only"
    prepared = prepared_text.get(seq, "")
    preprepared = preprepared_text.get(seq, "")
    if not prepared and not preprepared:
        return None
    return f'{{"prepared":[{prepared}],"preprepared":[{preprepared}]}}'.encode()


def join_votes(head: bytes, rows: Iterable[tuple[int, bytes]]) -> bytes:
    """The whole votes record from a `votes` head and the `vote` rows stored beside it (those
    at or below the head's h are left out). A head written before the rows existed is a whole
    record already and comes back unchanged when there are no rows. Raises ValueError if a
    record is malformed."""
    rows = list(rows)
    try:
        data = json.loads(head)
        if type(data) is not dict:
            raise TypeError("not an object")
        if not rows and ("prepared" in data or "h" not in data):
            return head
        h = data["h"]
        prepared = list(data.get("prepared", []))
        preprepared = list(data.get("preprepared", []))
        for seq, row in sorted(rows):
            if seq > h:
                votes = json.loads(row)
                prepared.extend(votes["prepared"])
                preprepared.extend(votes["preprepared"])
        return json.dumps({"view": data["view"], "active": data["active"], "h": h,
                           "prepared": prepared, "preprepared": preprepared},
                          separators=(",", ":")).encode()
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"malformed votes record: {exc}") from exc


def checkpoint_record(seq: int, proof: tuple[m.Checkpoint, ...], snapshot: bytes, view: int,
                      me: int) -> bytes:
    """The `checkpoint` record: a stable checkpoint's snapshot and its proof."""
    return m.encode(m.StateData(seq, proof, (m.digest_of(snapshot),), 0, snapshot, (), view,
                                b"", me))


def stable_record(seq: int, proof: tuple[m.Checkpoint, ...], view: int, me: int) -> bytes:
    """The `stable` record: the latest stable checkpoint's proof, without its state."""
    return m.encode(m.StateData(seq, proof, (), 0, b"", (), view, b"", me))


def block_record(cb: m.CommittedBatch) -> bytes:
    """The `block` record of one executed batch."""
    return m.encode(cb)


class StableState(Protocol):
    """Where the stable checkpoint goes (node.pbft.checkpoint.Checkpoints)."""

    def valid_proof(self, seq: int, proof: tuple[m.Checkpoint, ...]) -> bool: ...

    def remember(self, seq: int, replies: dict[tuple[str, int], Any]) -> bytes: ...

    own: dict[int, bytes]
    durable_seq: int

    def advance_stable(self, seq: int, proof: tuple[m.Checkpoint, ...], held: bool,
                       snap: bytes | None = None, persist: bool = True) -> None: ...


class Executor(Protocol):
    """What runs the replicated state (node.pbft.normal_case.NormalCase)."""

    replies: dict[tuple[str, int], Any]

    def restore_snapshot(self, snapshot: bytes, digest: bytes) -> None: ...

    def execute(self, seq: int, view: int, digest: bytes, batch: m.Batch) -> None: ...


def restore(log: Log, checkpoints: StableState, executor: Executor, votes: bytes | None,
            checkpoint: bytes | None, blocks: Iterable[bytes],
            stable: bytes | None = None) -> None:
    """Rebuild from the records: the snapshot on disk (verified against its proof), the
    batches executed after it (our own record, replayed in order), the latest stable
    checkpoint (its proof, when the replayed state matches it), then the votes. Raises
    ValueError if the records are malformed or do not verify. The caller discards the
    effects replaying produces."""
    if checkpoint:
        record = m.decode(checkpoint)
        if type(record) is not m.StateData or not checkpoints.valid_proof(
                record.stable_seq, record.checkpoint_proof):
            raise ValueError("stored checkpoint does not verify")
        try:
            executor.restore_snapshot(record.chunk, record.checkpoint_proof[0].digest)
        except ValueError as exc:
            raise ValueError(f"stored snapshot does not match its proof: {exc}") from exc
        log.last_executed = record.stable_seq
        checkpoints.remember(record.stable_seq, executor.replies)
        checkpoints.advance_stable(record.stable_seq, record.checkpoint_proof, True,
                                   record.chunk, persist=False)
        checkpoints.durable_seq = record.stable_seq
    for raw in blocks:
        cb = m.decode(raw)
        if type(cb) is not m.CommittedBatch:
            raise ValueError("stored block is not a committed batch")
        if cb.seq == log.last_executed + 1:
            executor.execute(cb.seq, cb.view, cb.batch.digest(), cb.batch)
    if stable:
        proven = m.decode(stable)
        if type(proven) is not m.StateData or not checkpoints.valid_proof(
                proven.stable_seq, proven.checkpoint_proof):
            raise ValueError("stored stable checkpoint proof does not verify")
        seq = proven.stable_seq
        # Replaying executed through it (and took our own checkpoint there): the same state
        # the proof's 2f+1 replicas signed, or we leave it to the protocol to catch up.
        if log.h < seq <= log.last_executed and \
                checkpoints.own.get(seq) == proven.checkpoint_proof[0].digest:
            checkpoints.advance_stable(seq, proven.checkpoint_proof, True, persist=False)
    if votes:
        _restore_votes(log, votes)
    log.next_seq = max([log.next_seq, log.last_executed + 1]
                       + [s + 1 for s, by in log.preprepared.items() if log.view in by.values()])


def _restore_votes(log: Log, votes: bytes) -> None:
    try:
        data = json.loads(votes)
        log.view = int(data["view"])
        log.view_active = bool(data["active"])
        for seq, digest, view in data["prepared"]:
            if seq > log.h:
                log.note_prepared(seq, bytes.fromhex(digest), view)
        for seq, digest, view in data["preprepared"]:
            if seq > log.h:
                log.note_preprepared(seq, bytes.fromhex(digest), view)
                if view == log.view:
                    # Re-pin the digest we voted for in this view: a conflicting
                    # PRE-PREPARE for this (view, seq) will now be refused.
                    slot = log.slot(seq)
                    slot.digest, slot.pre_prepared = bytes.fromhex(digest), True
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"malformed votes record: {exc}") from exc
