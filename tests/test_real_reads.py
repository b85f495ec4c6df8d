"""Layer 5: signed reads and receipts against real node processes on 127.0.0.1 (HTTP).

`medbft tx` puts transactions on the ledger; an unsigned read is refused (401), a role that
may not read is refused (403); `medbft query` asks f+1 replicas and writes a receipt that
`medbft verify-receipt` accepts offline, and refuses once any byte of it is altered.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from ledger_support import GTIN, epc, ev
from realnet import real_cluster

from medbft.cli import main
from medbft.real.reads import submit_tx
from node.netdir import NetworkDir
from node.tls import api_session

PROTOCOL = {"checkpoint_interval": 4, "watermark_window": 16}


def _tx(capsys: pytest.CaptureFixture[str], net: Path, kind: str, fields: object) -> str:
    code = main(["tx", "--network", str(net), "--as", "client-1", "--wait", kind,
                 json.dumps(fields)])
    out = capsys.readouterr().out.strip()
    assert code == (0 if out.startswith("ok") else 1), out
    return out


async def _status_of(net: NetworkDir, url: str) -> int:
    """An unsigned read, over TLS with the operator's certificate (no certificate at all
    gets no connection: tests/test_tls.py)."""
    async with api_session(net) as s, s.get(url) as r:
        return r.status


@pytest.mark.real
@pytest.mark.slow
def test_signed_reads_and_receipts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with real_cluster(tmp_path, "http", protocol=PROTOCOL, clients=7) as cluster:
        net = cluster.net
        d = net.path
        out = _tx(capsys, d, "GTIN_REGISTER", {"gtin": GTIN})
        assert out.startswith("ok seq=") and " block=" in out
        _tx(capsys, d, "EPCIS_COMMISSION", {"gtin": GTIN, "epcs": [epc(1), epc(2)],
                                           "lot": "L1", "expiry": "2030-01-01",
                                           "event_hash": ev("c")})
        out = _tx(capsys, d, "GTIN_REGISTER", {"gtin": GTIN})
        assert out.startswith("rejected:gtin-taken seq="), out
        for _ in range(5):  # enough batches for a stable checkpoint past the commission
            asyncio.run(submit_tx(net, "client-1", "GTIN_REGISTER", {"gtin": GTIN}, True))

        base = net.url("hospital-1")
        for path in ("/ledger", "/state", f"/query/trace?arg={epc(1)}", "/checkpoint"):
            assert asyncio.run(_status_of(net, base + path)) == 401, path
        assert asyncio.run(_status_of(net, base + "/status")) == 200

        receipt = tmp_path / "receipt.json"
        args = ["query", "--network", str(d), "trace", epc(1), "--receipt", str(receipt)]
        assert main([*args[:3], "--as", "client-5", *args[3:]]) == 1  # a patient: 403
        assert "403" in capsys.readouterr().err
        assert main([*args[:3], "--as", "client-1", *args[3:]]) == 0, capsys.readouterr()
        body = json.loads(receipt.read_text())
        assert body["answer"]["custodian"] and len(body["attestations"]) == 2  # f+1 agree
        assert [e["height"] for e in body["entries"]] == [2]
        capsys.readouterr()
        assert main(["verify-receipt", str(receipt), "--network", str(d)]) == 0
        assert capsys.readouterr().out.startswith("valid")

        data = receipt.read_bytes()
        text = data.decode()
        for marker in ('"signature": "', '"path": [', '"op": "', '"custodian": "',
                       '"digest": "'):
            bad = bytearray(data)
            bad[text.index(marker) + len(marker) + 3] ^= 0x01
            receipt.write_bytes(bytes(bad))
            assert main(["verify-receipt", str(receipt), "--network", str(d)]) == 1, marker
            assert capsys.readouterr().out.startswith("invalid:")

        auditor = tmp_path / "blocks.json"  # client-7 is the auditor: all 4 replicas agree
        assert main(["query", "--network", str(d), "--as", "client-7", "--replicas", "4",
                     "--receipt", str(auditor), "blocks", "1", "2"]) == 0
        assert len(json.loads(auditor.read_text())["attestations"]) == 4
        assert main(["verify-receipt", str(auditor), "--network", str(d)]) == 0
