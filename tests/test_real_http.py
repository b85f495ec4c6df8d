"""Layer 5: real node processes on 127.0.0.1 over HTTP/WebSocket (and the node's API).

Thin on purpose: the protocol is covered in simulation. These check that the same replica
code commits requests as separate processes, that a backup killed with SIGKILL restarts
from its SQLite file and catches up without losing a committed transaction, that a killed
primary is replaced by a view change in real time, and that the API refuses bad input.
"""

from __future__ import annotations

import asyncio
import json
import pstats
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from realnet import load, poll, real_cluster, statuses, wait_ready

from medbft.real.cluster import free_ports
from medbft.real.load import check_ledgers, operator, request_seqs, signed_get
from node import messages as m
from node.crypto import Identity, Keyring
from node.netdir import NetworkDir, default_node_ids, init_network
from node.server import NodeOptions, NodeServer
from node.tls import api_session
from node.transport.http import hello_payload


def _agree(net: NetworkDir, ids: list[str]) -> dict[str, dict[str, object]] | None:
    rows = statuses(net)
    if set(rows) != set(ids):
        return None
    if len({rows[i]["last_executed"] for i in ids}) != 1:
        return None
    return rows


@pytest.mark.real
@pytest.mark.slow
def test_four_nodes_commit_and_a_killed_backup_catches_up(tmp_path: Path) -> None:
    with real_cluster(tmp_path, "http") as cluster:
        net = cluster.net
        ids = list(net.membership.node_ids)
        first = load(net, "http", seconds=1.0)
        assert first.summary["requests"]["committed"] >= 20
        assert first.summary["liveness"]["ok"] and first.summary["safety"]["ok"]

        backup = ids[2]
        cluster.kill(backup)  # SIGKILL: no clean shutdown, only what was committed to disk
        during = load(net, "http", seconds=1.0)
        assert during.summary["requests"]["committed"] >= 20, "3 of 4 still make progress"

        cluster.start(backup)
        wait_ready(cluster, [backup])
        rows = poll(lambda: _agree(net, ids), 20, "the restarted backup to catch up")
        assert rows[backup]["recovered_from_disk"] is True
        assert len({rows[i]["digest"] for i in ids}) == 1, "same state everywhere"
        # No committed transaction lost: every request a client accepted is in the ledger,
        # the stored ledgers agree seq by seq, and the restarted backup's state equals theirs.
        end = rows[ids[0]]["last_executed"]
        ledgers, seqs = asyncio.run(_ledgers(net, ids[0], end))
        assert ledgers["ok"], ledgers["violations"]
        assert ledgers["blocks_by_node"][backup] > 0
        accepted = [r.key for res in (first, during) for r in res.requests if r.commit_ns]
        assert accepted and all(key in seqs for key in accepted)


@pytest.mark.pure_python  # reads cProfile's view of the handlers
@pytest.mark.real
def test_profiled_nodes_write_where_their_cpu_went_when_stopped(tmp_path: Path) -> None:
    """`--profile-dir` (bench/real.py --profile): each node process writes its cProfile
    statistics when it stops cleanly, and they show the replica at work."""
    profiles = tmp_path / "profiles"
    with real_cluster(tmp_path, "http", node_args=["--profile-dir", str(profiles)]) as cluster:
        result = load(cluster.net, "http", seconds=0.5)
        assert result.summary["requests"]["committed"] >= 5
    files = sorted(profiles.glob("*.pstats"))
    assert [f.stem for f in files] == sorted(cluster.net.membership.node_ids)
    stats = pstats.Stats(*map(str, files))
    handlers = {func for (path, _, func) in stats.stats  # type: ignore[attr-defined]
                if path.endswith("node/pbft/normal_case.py")}
    assert {"on_pre_prepare", "on_commit", "execute"} <= handlers


async def _ledgers(net: NetworkDir, node: str, end: int) -> tuple[dict[str, Any], dict[str, int]]:
    async with api_session(net) as session:
        return (await check_ledgers(session, net, 1, end),
                await request_seqs(session, net, node, 1, end))


@pytest.mark.real
@pytest.mark.slow
def test_a_killed_primary_is_replaced_by_a_view_change(tmp_path: Path) -> None:
    with real_cluster(tmp_path, "http") as cluster:
        net = cluster.net
        ids = list(net.membership.node_ids)
        primary = ids[0]
        cluster.kill(primary)
        result = load(net, "http", seconds=2.0)
        assert result.summary["requests"]["committed"] >= 10
        assert result.summary["liveness"]["ok"]
        rows = statuses(net)
        assert primary not in rows
        assert all(r["view"] >= 1 and r["view_active"] for r in rows.values()), rows
        assert {r["primary"] for r in rows.values()} == {ids[rows[ids[1]]["view"] % 4]}


# -- the API, in process ------------------------------------------------------------------------


def _one_node_network(tmp_path: Path) -> NetworkDir:
    return init_network(tmp_path / "net", default_node_ids(4), clients=1, ports=free_ports(4))


def _signed_request(net: NetworkDir, op: bytes) -> bytes:
    keys = Keyring(net.identity("client-1"), net.membership.public_keys())
    unsigned = m.Request(op, 1, "client-1", 0, b"")
    req = m.Request(op, 1, "client-1", 0, keys.sign(m.encode(unsigned)))
    return m.encode(m.Envelope("client-1", m.encode(req), b""))


async def _api_checks(net: NetworkDir, tmp_path: Path) -> None:
    server = NodeServer(net, NodeOptions(network=net.path, node_id="hospital-1",
                                         data=tmp_path / "h1.db"))
    await server.start()
    base = net.url("hospital-1")
    try:
        async with api_session(net) as s:
            async def post(body: bytes, ctype: str = "application/octet-stream",
                           query: str = "") -> tuple[int, dict[str, object]]:
                async with s.post(f"{base}/tx{query}", data=body,
                                  headers={"Content-Type": ctype}) as r:
                    return r.status, await r.json()

            status, body = await post(b"\x00\x01garbage")
            assert status == 400 and "malformed" in str(body["error"])
            status, body = await post(b"x" * (70 * 1024))
            assert status == 413 and "larger than" in str(body["error"])
            status, body = await post(b"{}", "application/json")
            assert status == 400 and "envelope" in str(body["error"])
            status, body = await post(b"hello", "text/plain")
            assert status == 415
            status, body = await post(_signed_request(net, b"put a 1"))
            assert status == 422 and body["rule"] == "malformed", body  # not a ledger tx
            from node.ledger import encode_tx
            good = _signed_request(net, encode_tx("GTIN_REGISTER", gtin="00614141000012"))
            forged = bytearray(good)
            forged[-3] ^= 0xFF
            status, body = await post(bytes(forged))
            assert status in (400, 403), body
            status, body = await post(good, query="?wait=forever")
            assert status == 400 and "wait" in str(body["error"])
            status, body = await post(good)
            assert status == 202 and body["key"] == "client-1/0/1"
            async with s.get(f"{base}/ledger?limit=0") as r:
                assert r.status == 401  # an unsigned read
            async with signed_get(s, f"{base}/ledger?limit=0", operator(net)) as r:
                assert r.status == 400 and "limit" in (await r.json())["error"]
            async with s.get(f"{base}/nowhere") as r:
                assert r.status == 404
            async with s.get(f"{base}/metrics") as r:
                text = await r.text()
                assert r.status == 200 and 'medbft_view{node="hospital-1"} 0' in text
            await _unknown_party_is_refused(s, net)
    finally:
        await server.stop()


async def _unknown_party_is_refused(s: aiohttp.ClientSession, net: NetworkDir) -> None:
    stranger = Identity.generate("mallory")
    async with s.ws_connect(f"{net.url('hospital-1')}/ws") as ws:
        nonce = json.loads((await ws.receive(timeout=5)).data)["nonce"]
        sig = Keyring(stranger, {}).sign(hello_payload(net.network_id, "mallory", "hospital-1",
                                                       nonce))
        await ws.send_str(json.dumps({"network": net.network_id, "from": "mallory",
                                      "to": "hospital-1", "sig": sig.hex()}))
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4003
        assert msg.extra == "unknown party"


@pytest.mark.real
def test_api_refuses_malformed_oversized_and_forged_bodies(tmp_path: Path) -> None:
    net = _one_node_network(tmp_path)
    asyncio.run(_api_checks(net, tmp_path))


@pytest.mark.parametrize("bad", ["not-a-dir"])
def test_node_command_reports_a_missing_network(tmp_path: Path, bad: str) -> None:
    from medbft.cli import main

    assert main(["node", "--network", str(tmp_path / bad), "--id", "hospital-1"]) == 2


def test_frames_carry_many_messages_and_refuse_malformed_ones() -> None:
    from node.transport import FrameError, pack_frames, unpack_frame

    messages = [bytes([i]) * i for i in range(50)]
    frames = pack_frames(messages, target_bytes=300)
    assert len(frames) > 1
    assert [msg for f in frames for msg in unpack_frame(f)] == messages
    with pytest.raises(FrameError, match="truncated"):
        unpack_frame(b"\x00\x00")
    with pytest.raises(FrameError, match="runs past"):
        unpack_frame(b"\x00\x00\x00\x09abc")


@pytest.mark.real
@pytest.mark.slow
def test_cluster_command_applies_a_scenarios_crash_with_real_signals(tmp_path: Path) -> None:
    from medbft.cli import main

    scenario = tmp_path / "crash.yaml"
    scenario.write_text(
        "name: real-crash\nduration: 2s\ndrain: 5s\nnodes: 4\nnetwork: {latency: 1ms}\n"
        "protocol: {view_change_timeout: 300ms, client_timeout: 300ms,"
        " checkpoint_interval: 16, watermark_window: 64}\n"
        "workload: {clients: 1, outstanding: 2}\n"
        "faults:\n  - {at: 500ms, crash: regulator-1, until: 1200ms}\n"
        "  - {at: 600ms, partition: [[hospital-1], [pharmacy-1, hospital-2]], until: 700ms}\n")
    out = tmp_path / "out"
    code = main(["cluster", "--scenario", str(scenario), "--transport", "http",
                 "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    assert code == 0, summary
    [window] = summary["faults"]
    assert (window["kind"], window["target"]) == ("crash", "regulator-1")
    assert 0.5 <= window["start_s"] < window["end_s"], window
    agreement = summary["safety"]["state_agreement"]
    assert agreement["ok"] and len(agreement["nodes"]) == 4
    assert [n["exit_code"] for n in summary["nodes"].values()] == [0, 0, 0, 0]
    assert summary["requests"]["committed"] == summary["requests"]["submitted"] > 0
    rows = (out / "requests.csv").read_text().splitlines()
    assert rows[0].startswith("client,session,timestamp") and len(rows) > 1
    assert (out / "logs" / "regulator-1.log").read_text().count("ready") == 2
    # the same keys, with the same meaning, as a simulated run of the same scenario
    assert main(["run", str(scenario), "--out", str(tmp_path / "sim"), "--no-plots",
                 "--quiet"]) == 0
    simulated = json.loads((tmp_path / "sim" / "summary.json").read_text())
    assert list(summary) == list(simulated)
    for section in ("requests", "latency_ms", "messages", "liveness"):
        assert list(summary[section]) == list(simulated[section]), section
    assert (summary["mode"], simulated["mode"]) == ("real", "sim")
    assert summary["scenario_hash"] == simulated["scenario_hash"]
    assert summary["sim_time_s"] is None and summary["wall_time_s"] > 0
    assert summary["expect"] == {"ok": True, "failed": []}


@pytest.mark.real
@pytest.mark.slow
def test_cluster_command_exits_1_when_the_scenarios_expectations_fail(tmp_path: Path) -> None:
    """A real run checks the scenario's `expect:` as `medbft run` does: a bound no run can
    meet (every request under 1 µs at p50) fails it, with exit code 1."""
    from medbft.cli import main

    scenario = tmp_path / "strict.yaml"
    scenario.write_text(
        "name: real-strict\nduration: 1s\ndrain: 3s\nnodes: 4\nnetwork: {latency: 1ms}\n"
        "workload: {app: kv, clients: 1, outstanding: 1}\n"
        "expect: {safety: true, liveness: true, latency_ms_p50_max: 0.001}\n")
    out = tmp_path / "out"
    code = main(["cluster", "--scenario", str(scenario), "--transport", "http",
                 "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    assert code == 1, summary
    assert [f["name"] for f in summary["expect"]["failed"]] == ["latency_ms_p50_max"]
    assert summary["safety"]["ok"] and summary["liveness"]["ok"]


# -- the healthcare ledger on real nodes -------------------------------------------------------


def test_keys_init_gives_ledger_clients_their_roles_and_kv_clients_none(tmp_path: Path) -> None:
    from medbft.cli import main
    from node.ledger.roles import CLIENT_ROLES

    assert main(["keys", "init", "--out", str(tmp_path / "ledger")]) == 0
    net = NetworkDir.load(tmp_path / "ledger")
    assert net.state_machine == "ledger"
    assert [c.role for c in net.membership.clients] == list(CLIENT_ROLES)
    assert main(["keys", "init", "--out", str(tmp_path / "kv"), "--app", "kv"]) == 0
    kv = NetworkDir.load(tmp_path / "kv")
    assert kv.state_machine == "kv"
    assert {c.role for c in kv.membership.clients} == {"client"}


@pytest.mark.real
@pytest.mark.slow
def test_a_real_cluster_runs_the_ledger_and_rejects_bad_transactions_with_reasons(
        tmp_path: Path) -> None:
    """Four node processes execute the simulator's ledger traffic from all seven roles, a
    fifth of it deliberately bad: every node reaches the same chain head, and the bad
    transactions are rejected with reasons (their audit entries included)."""
    from medbft.cli import main

    out = tmp_path / "out"
    code = main(["cluster", "--duration", "2s", "--outstanding", "2", "--invalid", "0.2",
                 "--protocol", "view_change_timeout=300ms", "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    assert code == 0, summary
    ledger = summary["ledger"]
    assert ledger["heads_agree"] and len(ledger["heads"]) == 4
    assert len({h["head"] for h in ledger["heads"].values()}) == 1
    committed = summary["requests"]["committed"]
    # Personal data and non-canonical JSON are refused at admission: answered, never ordered.
    refused = ledger["refused_at_admission"]
    assert refused and set(refused) <= {"phi-field:birthDate", "not-a-code:reason",
                                        "non-canonical"}, refused
    assert committed > 0 and ledger["transactions"] == committed - sum(refused.values())
    rejected = sum(k["rejected"] for k in ledger["txs_by_kind"].values())
    assert rejected > 0 and sum(ledger["rejections_by_reason"].values()) == rejected
    assert "role-not-permitted" in ledger["rejections_by_reason"]
    kinds = {k for k, v in ledger["txs_by_kind"].items() if v["ok"]}
    assert {"GTIN_REGISTER", "EPCIS_COMMISSION"} <= kinds, "the manufacturer traded"
    assert kinds & {"ACCESS_REQUEST", "RECORD_ANCHOR", "CONSENT_GRANT"}, "clinical roles too"
    assert ledger["audit_entries"] >= rejected


# -- personal data never reaches a disk ---------------------------------------------------------

PHI_STRINGS = (b"Peter Chalmers", b"1974-12-25", b"MRN-48213", b"HIV")


def _signed(net: NetworkDir, op: bytes, timestamp: int) -> bytes:
    keys = Keyring(net.identity("client-1"), net.membership.public_keys())
    unsigned = m.Request(op, timestamp, "client-1", 0, b"")
    req = m.Request(op, timestamp, "client-1", 0, keys.sign(m.encode(unsigned)))
    return m.encode(m.Envelope("client-1", m.encode(req), b""))


async def _submit_phi(net: NetworkDir) -> None:
    from node.ledger import encode_tx
    from node.ledger.genesis import pseudonym_for

    patient = pseudonym_for("client-2", "hospital-1")
    anchor = encode_tx("RECORD_ANCHOR", record_id="rec-1", patient=patient,
                       resource_type="Observation", commitment="sha256:" + "0" * 64,
                       fhir_version="4.0.1", name="Peter Chalmers", birthDate="1974-12-25")
    suspend = encode_tx("ORG_SUSPEND", org="pharmacy-1",
                        reason="Peter Chalmers, born 1974-12-25, MRN-48213, HIV positive")
    good = encode_tx("ORG_SUSPEND", org="pharmacy-1", reason="compliance-investigation")
    async with api_session(net) as s:
        async def post(node: str, body: bytes, query: str = "") -> tuple[int, Any]:
            async with s.post(f"{net.url(node)}/tx{query}", data=body,
                              headers={"Content-Type": "application/octet-stream"}) as r:
                return r.status, await r.json()

        for k, node in enumerate(net.membership.node_ids):
            status, body = await post(node, _signed(net, anchor, 1 + k))
            assert status == 422 and body["rule"] == "phi-field:birthDate", body
            status, body = await post(node, _signed(net, suspend, 10 + k))
            assert status == 422 and body["rule"] == "not-a-code:reason", body
        # An admissible transaction of the same client is ordered and stored everywhere.
        status, body = await post(net.membership.node_ids[0], _signed(net, good, 20), "?wait=20")
        assert status == 200 and body["result"].startswith(("ok", "rejected:")), body
        async with s.get(f"{net.url(net.membership.node_ids[0])}/status") as r:
            counters = (await r.json())["counters"]
        assert counters["refused_at_api"] == {"not-a-code:reason": 1,
                                              "phi-field:birthDate": 1}


@pytest.mark.real
@pytest.mark.slow
def test_personal_data_is_refused_by_the_api_and_lands_on_no_disk(tmp_path: Path) -> None:
    """A RECORD_ANCHOR with a name and a birth date, and a suspension whose reason tells a
    patient's story, submitted to every node of a 4-node HTTP cluster: 422 with the rule's
    name; afterwards no file under the network, data or log directories (SQLite files and
    their journals included) holds any of the personal strings."""
    with real_cluster(tmp_path, "http") as cluster:
        net = cluster.net
        asyncio.run(_submit_phi(net))
        poll(lambda: _agree(net, list(net.membership.node_ids)), 20, "all nodes to execute")
    # Key material (PEM, broker passwords and their hashes) is random base64 written before
    # any request: a three-letter string such as "HIV" turns up in it by chance.
    files = [p for p in tmp_path.rglob("*") if p.is_file() and not (
        p.suffix in (".pem", ".mqtt-password") or p.name == "mosquitto.passwd")]
    assert any(p.suffix == ".db" for p in files) and any(p.suffix == ".log" for p in files)
    leaks = {str(p.relative_to(tmp_path)): [s.decode() for s in PHI_STRINGS
                                            if s in p.read_bytes()] for p in files}
    assert {p: found for p, found in leaks.items() if found} == {}
