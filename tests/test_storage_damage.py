"""Storage that notices damage (node/storage.py, node/server.py): a flipped byte, a truncated
or an empty database makes the node refuse to start with one line and exit code 2, unless
`--rebuild`; files are private; gaps in the stored ledger are reported, not hidden.

Why this exists: a store that serves or replays damaged bytes under their original digest, or
treats a wiped file as a fresh start, lies to its users. These pin that it does not.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from medbft.real.cluster import free_ports
from node.config import Config
from node.netdir import NetworkDir, default_node_ids, init_network
from node.storage import Storage, StorageError
from sim.memnet import InMemoryCluster

CONFIG = Config(durable=True, checkpoint_interval=4, watermark_window=8)
ROOT = Path(__file__).resolve().parent.parent


def _stored(path: Path, owner: str = "r1", network_id: str = "net-1", requests: int = 10
            ) -> None:
    """A database holding `requests` blocks, a checkpoint and votes of a memnet run."""
    c = InMemoryCluster(n=4, config=CONFIG)
    for i in range(requests):
        c.submit(f"put key{i:03d} value{i:03d}".encode())
        c.deliver_all()
    store = Storage(path, owner=owner, network_id=network_id)
    for key in ("checkpoint", "votes", "block"):
        for data in c.disk["r1"].get(key, []):
            store.stage(key, data)
    store.close()


def _flip(path: Path, needle: bytes) -> None:
    """Flip one byte inside the (single) stored occurrence of `needle`, on disk."""
    raw = bytearray(path.read_bytes())
    at = raw.find(needle)
    assert at >= 0 and raw.find(needle, at + 1) < 0, "needle must occur once"
    raw[at + len(needle) - 1] ^= 0x01
    path.write_bytes(bytes(raw))


def test_a_flipped_byte_in_a_stored_block_is_refused_on_open(tmp_path: Path) -> None:
    db = tmp_path / "r1.db"
    _stored(db)
    _flip(db, b"put key003 value003")
    with pytest.raises(StorageError, match=r"r1\.db: block 4 fails its checksum"):
        Storage(db, owner="r1", network_id="net-1")


def test_damage_after_opening_is_refused_on_read(tmp_path: Path) -> None:
    db = tmp_path / "r1.db"
    _stored(db)
    store = Storage(db, owner="r1", network_id="net-1")
    row = store._db.execute("SELECT data FROM blocks WHERE seq = 2").fetchone()[0]
    bad = bytearray(row)
    bad[-3] ^= 0x40
    store._db.execute("UPDATE blocks SET data = ? WHERE seq = 2", (bytes(bad),))
    with pytest.raises(StorageError, match="block 2 fails its checksum"):
        list(store.blocks(1, 10))
    with pytest.raises(StorageError, match="block 2 fails its checksum"):
        store.digests()
    store._db.execute("UPDATE records SET data = data || x'00' WHERE key = 'votes'")
    with pytest.raises(StorageError, match="votes record fails its checksum"):
        store.load()
    store.abandon()


def test_a_damaged_vote_row_is_refused_on_open_and_on_read(tmp_path: Path) -> None:
    """The votes a replica wrote seq by seq (the `votes` table) are checked as every other
    row is: when the database opens, and again when a restart reads them."""
    db = tmp_path / "r1.db"
    store = Storage(db, owner="r1", network_id="net-1")
    row = b'{"prepared":[[12,"%s",0]],"preprepared":[[12,"%s",0]]}' % (b"ab" * 32, b"ab" * 32)
    store.stage("vote", row, seq=12)
    store.stage("votes", b'{"view":0,"active":true,"h":8}', seq=8)
    store.close()
    store = Storage(db, owner="r1", network_id="net-1")
    assert b'"prepared":[[12,' in (store.load().votes or b"")
    store._db.execute("UPDATE votes SET data = data || x'00' WHERE seq = 12")
    with pytest.raises(StorageError, match="vote record fails its checksum"):
        store.load()
    store.abandon()
    with pytest.raises(StorageError, match=r"r1\.db: vote record fails its checksum"):
        Storage(db, owner="r1", network_id="net-1")


def test_truncated_and_empty_databases_are_refused(tmp_path: Path) -> None:
    db = tmp_path / "r1.db"
    _stored(db, requests=40)
    size = db.stat().st_size
    with db.open("r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(StorageError, match=r"r1\.db: (unreadable|damaged) database"):
        Storage(db, owner="r1", network_id="net-1")
    db.write_bytes(b"")
    with pytest.raises(StorageError, match=r"r1\.db: the database is empty"):
        Storage(db, owner="r1", network_id="net-1")
    kept = Storage.discard(db)
    assert kept is not None and kept.exists() and not db.exists()
    Storage(db, owner="r1", network_id="net-1").close()  # a missing file is a fresh start


def test_files_are_private(tmp_path: Path) -> None:
    db = tmp_path / "data" / "r1.db"
    os.umask(0o022)
    store = Storage(db, owner="r1", network_id="net-1")
    store.close()
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    for f in db.parent.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_missing_ranges(tmp_path: Path) -> None:
    db = tmp_path / "r1.db"
    _stored(db)
    store = Storage(db, owner="r1", network_id="net-1")
    assert store.missing(10) == []
    assert store.missing(13) == [(11, 13)]
    store._db.execute("DELETE FROM blocks WHERE seq <= 3 OR seq IN (6, 7)")
    assert store.missing(12) == [(1, 3), (6, 7), (11, 12)]
    store.close()


# -- the node process -------------------------------------------------------------------------


def _network(tmp_path: Path) -> NetworkDir:
    return init_network(tmp_path / "net", default_node_ids(4), clients=1, ports=free_ports(4))


def _node(net: NetworkDir, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "medbft", "node", "--network", str(net.path), "--id",
         "hospital-1", *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "300"})


def _refused(net: NetworkDir) -> str:
    proc = _node(net)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert "Traceback" not in err, err
    return err


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_the_node_refuses_a_damaged_store_with_exit_2_and_rebuilds_on_request(
        tmp_path: Path, damage: str) -> None:
    net = _network(tmp_path)
    db = net.data_path("hospital-1")
    _stored(db, owner="hospital-1", network_id=net.network_id, requests=40)
    if damage == "flip":
        _flip(db, b"put key003 value003")
        expected = "block 4 fails its checksum"
    elif damage == "truncate":
        with db.open("r+b") as fh:
            fh.truncate(db.stat().st_size // 2)
        expected = "database"
    else:
        db.write_bytes(b"")
        expected = "the database is empty"
    err = _refused(net)
    assert str(db) in err.replace("\n", "") and expected in err, err
    assert len([line for line in err.splitlines() if line.strip()]) <= 2, err

    proc = _node(net, "--rebuild")
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                with urllib.request.urlopen(f"{net.url('hospital-1')}/status", timeout=1,
                                            context=net.client_ssl()):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the rebuilt node did not start"
                time.sleep(0.1)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "--rebuild" in err and list(db.parent.glob("hospital-1.db.discarded-0")), err
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_back_fill_stores_only_blocks_whose_body_matches_the_vouched_digest(
        tmp_path: Path) -> None:
    from node import messages as m
    from node.backfill import Backfill

    source = tmp_path / "full.db"
    _stored(source)
    full = Storage(source, owner="r1", network_id="net-1")
    raws = dict(full.blocks(1, 100))
    digests = {seq: d.hex() for seq, d in full.digests()}
    full.close()
    store = Storage(tmp_path / "gap.db", owner="r1", network_id="net-1")
    for seq in (1, 2, 3, 8, 9, 10):
        store.stage("block", raws[seq])
    store.commit()
    assert store.missing(10) == [(4, 7)]
    fill = Backfill(store, {}, f=1, stable=lambda: 8)
    cb = m.decode(raws[5])
    assert type(cb) is m.CommittedBatch
    other = m.decode(raws[6])
    assert type(other) is m.CommittedBatch
    forged = m.encode(m.CommittedBatch(5, cb.view, other.batch))  # another body at seq 5
    body = {"blocks": [{"seq": 4, "raw": raws[4].hex()}, {"seq": 5, "raw": forged.hex()},
                       {"seq": 6, "raw": raws[6].hex()}, {"seq": 7, "raw": raws[7].hex()}]}
    assert fill._store(body, {4: digests[4], 5: digests[5], 6: digests[6]}) == 2
    assert fill.refused == 1 and store.missing(10) == [(5, 5), (7, 7)]
    store.close()
