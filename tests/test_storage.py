"""Durable storage (node/storage.py): what a replica persists comes back after a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from node import messages as m
from node.config import Config
from node.crypto import Costs, Keyring
from node.pbft import Replica
from node.statemachine import KeyValueStore
from node.storage import Storage, StorageError
from sim.memnet import InMemoryCluster

CONFIG = Config(durable=True, checkpoint_interval=4, watermark_window=8,
                durable_snapshot_every=1)
"""A snapshot on disk at every stable checkpoint (the default writes one every 8th)."""


def _run(requests: int, config: Config = CONFIG) -> InMemoryCluster:
    c = InMemoryCluster(n=4, config=config)
    for i in range(requests):
        c.submit(f"put k{i} v{i}".encode())
        c.deliver_all()
    return c


def _save(c: InMemoryCluster, rid: str, path: Path) -> Storage:
    disk = c.disk[rid]
    store = Storage(path, owner=rid, network_id="net-1")
    for key in ("checkpoint", "votes", "stable"):
        for data in disk.get(key, []):
            store.stage(key, data)
    for data in disk.get("block", []):
        store.stage("block", data)
    store.commit()
    return store


def test_round_trip_rebuilds_the_replica(tmp_path: Path) -> None:
    c = _run(10)
    rid = "r1"
    original = c.replicas[rid]
    assert original.last_executed == 10 and original.h == 8
    _save(c, rid, tmp_path / "r1.db").close()

    store = Storage(tmp_path / "r1.db", owner=rid, network_id="net-1")
    records = store.load()
    assert records.checkpoint_seq == 8
    assert len(records.blocks) == 2, "only the blocks after the stable checkpoint replay"
    assert [seq for seq, _ in store.digests()] == list(range(1, 11))
    keys = Keyring(c.idents[rid], c.membership.public_keys(), Costs())
    fresh = Replica(c.membership, rid, keys, KeyValueStore(), CONFIG)
    fresh.restore_durable(records.votes, records.checkpoint, records.blocks, records.stable)
    assert fresh.last_executed == original.last_executed
    assert fresh.h == original.h
    assert fresh.sm.digest() == original.sm.digest()
    assert fresh.view == original.view
    store.close()


def test_snapshots_go_to_disk_every_few_checkpoints_and_a_restart_replays_the_rest(
        tmp_path: Path) -> None:
    """`durable_snapshot_every`: the whole state is written at every 2nd stable checkpoint
    here (seq 8, 16), while every stable checkpoint's proof is (`stable`). A restart replays
    the blocks since the snapshot and comes back at the latest stable checkpoint."""
    config = Config(durable=True, checkpoint_interval=4, watermark_window=8,
                    durable_snapshot_every=2)
    from node import messages as m

    c = InMemoryCluster(n=4, config=config)
    rid = "r1"
    written = set()  # (snapshot seq, proof seq) on disk after each request
    for i in range(22):
        c.submit(f"put k{i} v{i}".encode())
        c.deliver_all()
        disk = c.disk[rid]
        written.add(tuple(m.decode(disk[k][-1]).stable_seq if k in disk else 0  # type: ignore[union-attr]
                          for k in ("checkpoint", "stable")))
    assert sorted(written) == [(0, 0), (0, 4), (8, 8), (8, 12), (16, 16), (16, 20)]
    assert m.decode(c.disk[rid]["stable"][-1]).chunk == b""  # type: ignore[union-attr]
    original = c.replicas[rid]
    assert original.last_executed == 22 and original.h == 20
    _save(c, rid, tmp_path / "r1.db").close()
    store = Storage(tmp_path / "r1.db", owner=rid, network_id="net-1")
    records = store.load()
    assert records.checkpoint_seq == 16 and len(records.blocks) == 6
    keys = Keyring(c.idents[rid], c.membership.public_keys(), Costs())
    fresh = Replica(c.membership, rid, keys, KeyValueStore(), config)
    fresh.restore_durable(records.votes, records.checkpoint, records.blocks, records.stable)
    assert (fresh.last_executed, fresh.h) == (22, 20)
    assert fresh.sm.digest() == original.sm.digest()
    assert fresh.checkpoints.durable_seq == 16
    # Without the proof (a store from before it was written) it comes back at the snapshot.
    older = Replica(c.membership, rid, keys, KeyValueStore(), config)
    older.restore_durable(records.votes, records.checkpoint, records.blocks)
    assert (older.last_executed, older.h) == (22, 16)
    # A proof that does not verify is refused, as a damaged snapshot is.
    forged = m.decode(records.stable)
    assert isinstance(forged, m.StateData)
    bad = m.encode(m.StateData(forged.stable_seq, forged.checkpoint_proof[:1], (), 0, b"", (),
                               0, b"", 1))
    with pytest.raises(ValueError, match="stable checkpoint proof"):
        Replica(c.membership, rid, keys, KeyValueStore(), config).restore_durable(
            records.votes, records.checkpoint, records.blocks, bad)
    store.close()


def test_a_database_belongs_to_one_node(tmp_path: Path) -> None:
    Storage(tmp_path / "x.db", owner="r1", network_id="net-1").close()
    with pytest.raises(StorageError, match="belongs to node 'r1'"):
        Storage(tmp_path / "x.db", owner="r2", network_id="net-1")
    with pytest.raises(StorageError, match="network"):
        Storage(tmp_path / "x.db", owner="r1", network_id="net-2")


def test_staged_records_are_invisible_until_commit(tmp_path: Path) -> None:
    c = _run(2)
    store = Storage(tmp_path / "r0.db", owner="r0", network_id="n")
    for data in c.disk["r0"]["block"]:
        store.stage("block", data)
    assert store.dirty and store.last_block_seq() == 0
    store.commit()
    assert not store.dirty and store.last_block_seq() == 2
    with pytest.raises(StorageError, match="unknown persist key"):
        store.stage("nonsense", b"")
    with pytest.raises(StorageError, match="cannot decode"):
        store.stage("block", b"\xff\x00garbage")
    store.close()


def test_wal_mode_and_sync_levels(tmp_path: Path) -> None:
    store = Storage(tmp_path / "w.db", owner="r0", network_id="n", sync="full")
    mode = store._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    store.close()
    with pytest.raises(ValueError, match="sync must be one of"):
        Storage(tmp_path / "w2.db", owner="r0", network_id="n", sync="sometimes")


def test_the_votes_written_seq_by_seq_join_into_the_record_a_full_encoding_gives(
        tmp_path: Path) -> None:
    """A step writes a `vote` row for each seq whose votes it changed, and the `votes` head
    when the view or h moved, not the whole window. Every time a replica writes them (through
    a view change, checkpoints, which drop the rows at or below h, a restart from disk and a
    recovery), the rows joined with the head are the very bytes the whole record encodes
    from its log; and a store fed the same records loads that record back."""
    from node.events import Persist
    from node.pbft import durable

    c = InMemoryCluster(n=4, config=CONFIG)
    checked: list[bytes] = []
    rows_written: list[int] = []
    heads_written: list[int] = []
    stores = {rid: Storage(tmp_path / f"{rid}.db", owner=rid, network_id="net-1")
              for rid in c.replicas}
    apply = c._apply

    def checking(party: str, effects: list) -> None:  # type: ignore[type-arg]
        apply(party, effects)
        persisted = [e for e in effects if type(e) is Persist and e.key in ("vote", "votes")]
        if party not in c.replicas or party in c.crashed or not persisted:
            return
        for e in persisted:
            stores[party].stage(e.key, e.data, e.digest, e.seq)
        stores[party].commit()
        rows_written.append(sum(1 for e in persisted if e.key == "vote"))
        heads_written.append(sum(1 for e in persisted if e.key == "votes"))
        whole = durable.votes_record(c.replicas[party].log)
        assert c.disk[party]["votes"][-1] == whole
        assert stores[party].load().votes == whole
        checked.append(whole)

    c._apply = checking  # type: ignore[method-assign]
    for i in range(10):
        c.submit(f"put k{i} v{i}".encode())
        c.deliver_all()
    c.intercept = lambda p: [] if p.kind == "COMMIT" else [p]  # seq 11 prepares only
    c.submit(b"put k 10")
    c.deliver_all()
    c.crash("r1")
    c.restart_from_disk("r1")
    c.intercept = None
    c.advance(2_000_000_000)  # retransmitted COMMITs: seq 11 commits
    c.deliver_all()
    c.crash("r0")  # the primary: the next request needs a view change
    c.submit(b"put k 12", session=1)
    for _ in range(20):
        c.advance(1_000_000_000)
        c.deliver_all()
    assert c.replicas["r1"].view >= 1 and c.replicas["r1"].last_executed >= 12
    assert c.replicas["r1"].h >= 8, "checkpoints dropped the rows at or below h"
    assert len(checked) > 50
    views = {int(r[r.index(b'"view":') + 7:r.index(b",")]) for r in checked}
    assert views >= {0, 1}
    # A step writes the seqs it voted on, not the window: one in the normal case; a restart
    # and a NEW-VIEW rewrite what they restored or re-proposed.
    assert sorted(rows_written)[len(rows_written) // 2] == 1
    assert max(rows_written) <= CONFIG.watermark_window
    # The head (view, h) is written when it changes, not at every vote.
    assert 0 < sum(heads_written) < len(heads_written) // 3, (sum(heads_written),
                                                              len(heads_written))
    assert any(b'"prepared":[[' in r for r in checked)
    for store in stores.values():
        store.close()


def test_vote_rows_at_or_below_h_are_deleted_and_an_older_whole_record_still_loads(
        tmp_path: Path) -> None:
    """A head whose h passed a row deletes it in the same commit; a database written before
    the rows existed (one whole `votes` record, no rows) loads that record unchanged."""
    digest = "cd" * 32

    def row(seq: int) -> bytes:
        return f'{{"prepared":[],"preprepared":[[{seq},"{digest}",0]]}}'.encode()

    store = Storage(tmp_path / "r1.db", owner="r1", network_id="net-1")
    for seq in (5, 6, 9):
        store.stage("vote", row(seq), seq=seq)
    store.stage("votes", b'{"view":0,"active":true,"h":4}', seq=4)
    store.commit()
    assert store._db.execute("SELECT seq FROM votes ORDER BY seq").fetchall() == [
        (5,), (6,), (9,)]
    store.stage("votes", b'{"view":1,"active":false,"h":8}', seq=8)
    store.commit()
    assert store._db.execute("SELECT seq FROM votes").fetchall() == [(9,)]
    assert store.load().votes == (b'{"view":1,"active":false,"h":8,"prepared":[],'
                                  b'"preprepared":[[9,"%s",0]]}' % digest.encode())
    store.close()
    whole = b'{"view":2,"active":true,"h":0,"prepared":[],"preprepared":[]}'
    older = Storage(tmp_path / "r2.db", owner="r2", network_id="net-1")
    older.stage("votes", whole)
    older.close()
    again = Storage(tmp_path / "r2.db", owner="r2", network_id="net-1")
    assert again.load().votes == whole
    again.close()


def test_wal_checkpoints_run_on_their_own_thread_and_stop_with_the_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite's automatic checkpoint (a copy and an fsync inside some commit, every few
    hundred) is off on the node's connection; every CHECKPOINT_EVERY commits a thread does
    it, and the store's data is all there after a reopen."""
    import time

    from node import storage as storage_module

    store = Storage(tmp_path / "r1.db", owner="r1", network_id="net-1")
    assert store._db.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
    assert store.checkpointer.alive
    for i in range(storage_module.CHECKPOINT_EVERY):
        store.stage("votes", b'{"view":%d}' % i)
        store.commit()
    deadline = time.monotonic() + 10
    while store.checkpointer.checkpoints < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.checkpointer.checkpoints >= 1 and store.checkpointer.failures == 0
    assert store.inline_checkpoints == 0
    busy, frames, done = store._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert busy == 0 and frames == done  # nothing was left for the node's connection
    # A WAL that outgrows the limit is checkpointed by the node's connection itself.
    monkeypatch.setattr(storage_module, "WAL_LIMIT_BYTES", 0)
    for i in range(storage_module.CHECKPOINT_EVERY):
        store.stage("votes", b'{"view":%d}' % i)
        store.commit()
    assert store.inline_checkpoints == 1
    store.close()
    assert not store.checkpointer.alive
    again = Storage(tmp_path / "r1.db", owner="r1", network_id="net-1")
    assert again.load().votes == b'{"view":%d}' % (storage_module.CHECKPOINT_EVERY - 1)
    again.close()


def test_a_block_record_comes_with_its_digest_and_is_stored_as_if_decoded(tmp_path: Path) -> None:
    """The replica hands each block record's batch digest along with it, and storage,
    given it, stores exactly the row it would have stored by decoding the record."""
    c = _run(6)
    blocks, digests = c.disk["r1"]["block"], c.block_digests["r1"]
    assert len(blocks) == len(digests) == 6
    decoded = [m.decode(data) for data in blocks]
    assert digests == [cb.batch.digest() for cb in decoded if isinstance(cb, m.CommittedBatch)]
    given = Storage(tmp_path / "given.db", owner="r1", network_id="n")
    read = Storage(tmp_path / "read.db", owner="r1", network_id="n")
    for data, digest in zip(blocks, digests, strict=True):
        given.stage("block", data, digest)
        read.stage("block", data)
    assert given._blocks == read._blocks
    for store in (given, read):
        store.commit()
    rows = "SELECT * FROM blocks ORDER BY seq"
    assert given._db.execute(rows).fetchall() == read._db.execute(rows).fetchall()
    with pytest.raises(StorageError, match="cannot decode"):  # no digest: decoded, checked
        given.stage("block", b"\xff\x00garbage")
    given.close()
    read.close()
