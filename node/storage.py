"""Durable storage for one replica (real mode): SQLite in WAL mode.

Why this exists: a node that crashes and restarts must lose nothing that was committed and
must not vote against what it voted before. The replica core says what to keep through
`Persist` effects (`node.events.Persist`); this module keeps it:

- `block`: every executed batch (an encoded `CommittedBatch`), append-only, keyed by seq. It
  is this node's copy of the ledger, served by the API's `/ledger`, and the batches replayed
  after the stable checkpoint on restart;
- `checkpoint`: the latest stable checkpoint (an encoded `StateData`: 2f+1 signed
  CHECKPOINTs and the state snapshot), replaced in place;
- `votes`: the view and what this replica pre-prepared and prepared (what PBFT safety needs
  across a restart), replaced in place.

Write ordering: `stage()` collects the records of a step in memory (only the newest `votes`
and `checkpoint` matter; blocks accumulate); `commit()` writes them in one transaction. The
node calls `commit()` before any frame leaves (`node.transport.Outbox.before_flush`), so
nothing is sent that a restart could forget, and every step of one event-loop iteration
shares a single commit (group commit).

Durability levels (`sync`): `normal` (default) survives the process being killed (SIGKILL):
WAL pages are in the OS before the commit returns; `full` also fsyncs every commit, which
survives power loss at the price of one fsync per loop iteration. PBFT masks up to f nodes
that lose their disk, so `normal` is a reasonable default on a single machine; a consortium
deployment should run `full`.

What it must not know: protocol rules. It decodes records only to index them by seq.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from node import messages as m

__all__ = ["DurableRecords", "Storage", "StorageError"]

SYNC_LEVELS = {"off": "OFF", "normal": "NORMAL", "full": "FULL"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (seq INTEGER PRIMARY KEY, view INTEGER NOT NULL,
                                   digest BLOB NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS records (key TEXT PRIMARY KEY, seq INTEGER NOT NULL,
                                    data BLOB NOT NULL);
"""


class StorageError(RuntimeError):
    """The database belongs to another node or network, or a record cannot be read."""


@dataclass(frozen=True)
class DurableRecords:
    """What `Replica.restore_durable` needs: votes, checkpoint, blocks after the checkpoint."""

    votes: bytes | None
    checkpoint: bytes | None
    checkpoint_seq: int
    blocks: list[bytes]

    @property
    def empty(self) -> bool:
        return self.votes is None and self.checkpoint is None and not self.blocks


class Storage:
    """One node's SQLite database. Not thread-safe; used from the node's event loop only."""

    def __init__(self, path: str | Path, *, owner: str, network_id: str,
                 sync: str = "normal") -> None:
        """Open (or create) the database at `path` for node `owner` of `network_id`.
        Raises StorageError if it belongs to another node or network, ValueError for an
        unknown `sync` level."""
        if sync not in SYNC_LEVELS:
            raise ValueError(f"sync must be one of {', '.join(SYNC_LEVELS)}; got {sync!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={SYNC_LEVELS[sync]}")
        self._db.executescript(_SCHEMA)
        self._claim(owner, network_id)
        self._blocks: list[tuple[int, int, bytes, bytes]] = []
        self._records: dict[str, tuple[int, bytes]] = {}
        self.commits = 0
        self.blocks_written = 0

    def _claim(self, owner: str, network_id: str) -> None:
        rows = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if not rows:
            self._db.executemany("INSERT INTO meta VALUES (?, ?)",
                                 [("owner", owner), ("network", network_id)])
            return
        if rows.get("owner") != owner or rows.get("network") != network_id:
            self._db.close()
            raise StorageError(
                f"{self.path} belongs to node {rows.get('owner')!r} of network "
                f"{rows.get('network')!r}, not {owner!r} of {network_id!r}")

    # -- writing ------------------------------------------------------------------------------

    def stage(self, key: str, data: bytes) -> None:
        """Hold one Persist record until the next `commit()`. Raises StorageError for an
        unknown key or a record that does not decode."""
        if key == "block":
            cb = self._decode(data, m.CommittedBatch)
            assert type(cb) is m.CommittedBatch
            self._blocks.append((cb.seq, cb.view, cb.batch.digest(), data))
        elif key == "checkpoint":
            sd = self._decode(data, m.StateData)
            assert type(sd) is m.StateData
            self._records[key] = (sd.stable_seq, data)
        elif key == "votes":
            self._records[key] = (0, data)
        else:
            raise StorageError(f"unknown persist key {key!r}")

    @property
    def dirty(self) -> bool:
        return bool(self._blocks or self._records)

    def commit(self) -> None:
        """Write everything staged in one transaction (a no-op when nothing is staged)."""
        if not self._blocks and not self._records:
            return
        blocks, self._blocks = self._blocks, []
        records, self._records = self._records, {}
        db = self._db
        db.execute("BEGIN")
        try:
            if blocks:
                db.executemany("INSERT OR REPLACE INTO blocks VALUES (?, ?, ?, ?)", blocks)
            for key, (seq, data) in records.items():
                db.execute("INSERT OR REPLACE INTO records VALUES (?, ?, ?)", (key, seq, data))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.commits += 1
        self.blocks_written += len(blocks)

    # -- reading ------------------------------------------------------------------------------

    def load(self) -> DurableRecords:
        """The records a restart needs: votes, the stable checkpoint, the blocks after it."""
        records = {k: (s, d) for k, s, d in self._db.execute("SELECT key, seq, data FROM records")}
        checkpoint_seq, checkpoint = records.get("checkpoint", (0, None))
        votes = records.get("votes", (0, None))[1]
        blocks = [bytes(d) for (d,) in self._db.execute(
            "SELECT data FROM blocks WHERE seq > ? ORDER BY seq", (checkpoint_seq,))]
        return DurableRecords(None if votes is None else bytes(votes),
                              None if checkpoint is None else bytes(checkpoint),
                              checkpoint_seq, blocks)

    def blocks(self, start: int = 1, limit: int = 100) -> Iterator[tuple[int, bytes]]:
        """Stored blocks with seq >= `start`, in order, at most `limit`."""
        yield from ((s, bytes(d)) for s, d in self._db.execute(
            "SELECT seq, data FROM blocks WHERE seq >= ? ORDER BY seq LIMIT ?", (start, limit)))

    def digests(self, start: int = 1, limit: int = 10_000) -> list[tuple[int, bytes]]:
        """(seq, batch digest) of stored blocks with seq >= `start`, in order, at most `limit`
        (what replicas compare to check agreement, without decoding blocks)."""
        return [(s, bytes(d)) for s, d in self._db.execute(
            "SELECT seq, digest FROM blocks WHERE seq >= ? ORDER BY seq LIMIT ?",
            (start, limit))]

    def last_block_seq(self) -> int:
        row = self._db.execute("SELECT MAX(seq) FROM blocks").fetchone()
        return int(row[0] or 0)

    def close(self) -> None:
        """Commit anything staged and close the database."""
        self.commit()
        self._db.close()

    @staticmethod
    def _decode(data: bytes, cls: type[m.Message]) -> m.Message:
        try:
            msg = m.decode(data)
        except m.DecodeError as exc:
            raise StorageError(f"cannot decode a {cls.__name__} record: {exc}") from exc
        if type(msg) is not cls:
            raise StorageError(f"expected a {cls.__name__} record, got {type(msg).__name__}")
        return msg
