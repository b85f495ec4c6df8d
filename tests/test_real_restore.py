"""Real node processes: a node restored from an older copy of its database catches up on an
idle network, and its `/ledger` says which history it skipped.

Why this exists: a restored node used to ask for state once, time out after 100 ms while its
links were coming up, drop the late answers and stay behind for good when no client traffic
followed; and after catching up by state transfer its `/ledger` silently lacked the blocks
below the checkpoint. Loopback only, every wait bounded.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
from realnet import load, poll, real_cluster, statuses, wait_ready

from medbft.real.load import fetch_json, operator
from node.netdir import NetworkDir
from node.tls import api_session


def _db_files(db: Path) -> list[Path]:
    return [p for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists()]


async def _ledger(net: NetworkDir, url: str) -> Any:
    async with api_session(net) as session:
        return await fetch_json(session, f"{url}/ledger?digests=1&limit=10000", operator(net))


@pytest.mark.real
@pytest.mark.slow
def test_a_node_restored_from_an_older_copy_catches_up_on_an_idle_network(
        tmp_path: Path) -> None:
    with real_cluster(tmp_path, "http") as cluster:
        net = cluster.net
        ids = list(net.membership.node_ids)
        target = ids[3]
        db = net.data_path(target)
        assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(cluster.log_dir.stat().st_mode) == 0o700
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600
                   for p in [*_db_files(db), *cluster.log_dir.glob("*.log")])
        assert load(net, "http", seconds=1.0).summary["requests"]["committed"] >= 10

        cluster.kill(target)
        backup = tmp_path / "backup"
        backup.mkdir()
        for p in _db_files(db):
            shutil.copy2(p, backup / p.name)
        cluster.start(target)
        wait_ready(cluster, [target])
        later = load(net, "http", seconds=2.0)
        assert later.summary["requests"]["committed"] >= 40

        cluster.kill(target)
        for p in _db_files(db):
            p.unlink()
        for p in backup.iterdir():
            shutil.copy2(p, db.parent / p.name)
        # Only the restarted node reads this: what it sends takes 150 ms, so every answer to
        # its FETCH-STATE comes after the 100 ms fetch timeout (a slow or distant link).
        settings = json.loads((net.path / "network.json").read_text())
        settings["emulation"] = {"link_delay_ms": 150}
        (net.path / "network.json").write_text(json.dumps(settings))
        cluster.start(target)
        wait_ready(cluster, [target])
        old = statuses(net)[target]["last_executed"]

        def caught_up() -> dict[str, Any] | None:
            rows = statuses(net)
            tops = {rows[i]["last_executed"] for i in ids if i in rows}
            return rows if len(rows) == len(ids) and len(tops) == 1 else None

        # No client traffic from here on: only the node's own retries can bring it level.
        rows = poll(caught_up, 30, "the restored node to catch up on an idle network")
        top = rows[target]["last_executed"]
        assert top > old and len({rows[i]["digest"] for i in ids}) == 1

        ledger = asyncio.run(_ledger(net, net.url(target)))
        held = {seq for seq, _ in ledger["digests"]}
        missing = {s for a, b in ledger["missing"] for s in range(a, b + 1)}
        assert held | missing == set(range(1, top + 1)) and not held & missing
        # The load ran past several checkpoints: it caught up by a snapshot, which skipped
        # the history from its old copy up to that checkpoint; /ledger says so until the
        # back-fill (f+1 peers vouching for each digest) has stored it.
        assert rows[target]["counters"]["events"].get("state-transfer")
        filled = statuses(net)[target]["counters"]["backfilled_blocks"]
        assert filled or (ledger["missing"] and ledger["missing"][0][0] == old + 1), ledger

        def back_filled() -> Any:
            mine = asyncio.run(_ledger(net, net.url(target)))
            return mine if mine and not mine["missing"] and mine["last_executed"] == top \
                else None

        mine = poll(back_filled, 30, "the skipped history to be back-filled")
        theirs = asyncio.run(_ledger(net, net.url(ids[0])))
        assert mine["digests"] == theirs["digests"][:len(mine["digests"])]
        assert [s for s, _ in mine["digests"]] == list(range(1, top + 1))
        assert statuses(net)[target]["counters"]["backfilled_blocks"] > 0
