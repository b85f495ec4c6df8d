"""`medbft studio`: the session behind the page (medbft/studio/session.py) and its HTTP API
(medbft/studio/server.py), without a browser (tests/test_studio_browser.py has one).

The promise tested here: a studio session is always exactly `run_scenario` of the scenario
with its what-if actions as timed faults, so the saved scenario, run with `medbft run`,
reproduces the session byte for byte (summary, requests, trace, ledger)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from medbft.apps import write_ledger_results
from medbft.cli import main
from medbft.errors import UsageError
from medbft.results import write_results
from medbft.scenario import ScenarioError, load_scenario
from medbft.studio.server import make_app
from medbft.studio.session import Session

ROOT = Path(__file__).parent.parent
BASELINE = ROOT / "scenarios" / "baseline.yaml"


@pytest.fixture
def opened() -> Iterator[list[Session]]:
    """Sessions a test opened, closed after it (each holds a virtual-time loop)."""
    sessions: list[Session] = []
    yield sessions
    for session in sessions:
        session.close()


def _open(opened: list[Session], path: Path = BASELINE, *sets: str) -> Session:
    session = Session(load_scenario(path, [*sets] or ["duration=1s"]))
    opened.append(session)
    return session


def _without_wall_time(path: Path) -> dict[str, Any]:
    summary = json.loads(path.read_text())
    summary.pop("wall_time_s")
    return dict(summary)


def test_a_saved_session_is_reproduced_byte_for_byte_by_medbft_run(
        tmp_path: Path, opened: list[Session]) -> None:
    session = _open(opened)
    session.advance_to(300_000_000)
    session.act({"kind": "crash", "node": "hospital-1"})  # the primary of view 0
    assert session.stepper.run.runtimes["hospital-1"].crashed
    session.step("phase")
    session.advance_to(450_000_000)
    session.act({"kind": "link", "between": ["hospital-2", "regulator-1"], "latency": "30ms"})
    session.advance_to(900_000_000)
    session.act({"kind": "recover", "node": "hospital-1"})
    session.act({"kind": "request", "client": "client-1"})
    saved = session.save(tmp_path)
    assert saved.name == "baseline-studio.yaml"
    text = saved.read_text()
    assert "at: 300ms" in text and "crash: hospital-1" in text and "recover: hospital-1" in text

    assert "request: client-1" in text
    studio = session.stepper.finish()
    assert studio.summary["view_changes"] >= 1, "crashing the primary changed the view"
    extra = [r for r in studio.requests if r.session > 1_000_000]
    # one request more, in a session of its own, sent once the ledger traffic has one for it
    assert len(extra) == 1 and extra[0].submit_ns >= 900_000_000 and extra[0].commit_ns
    mine = tmp_path / "studio"
    write_results(mine, studio.summary, studio.requests, studio.trace)
    write_ledger_results(mine, studio)

    ran = tmp_path / "ran"
    assert main(["run", str(saved), "--out", str(ran), "--trace", "--no-plots",
                 "--quiet"]) in (0, 1)
    assert _without_wall_time(ran / "summary.json") == _without_wall_time(mine / "summary.json")
    for name in ("requests.csv", "trace.jsonl", "ledger.json", "ledger_digests.json"):
        assert (ran / name).read_bytes() == (mine / name).read_bytes(), name


def test_going_back_replays_from_the_seed(opened: list[Session]) -> None:
    session = _open(opened)
    session.advance_to(200_000_000)
    rows = [dict(r) for r in session.stepper.trace]
    session.advance_to(500_000_000)
    gen = session.gen
    session.seek(200_000_000)
    assert session.gen == gen + 1 and session.now_ns == 200_000_000
    assert session.stepper.trace == rows
    poll = session.poll(gen, len(rows))  # an old generation: every row again
    assert len(poll["rows"]) == len(rows)


def test_steps_stop_at_the_next_row_of_their_kind(opened: list[Session]) -> None:
    """A step ends after the batch of callbacks that recorded the row (one instant's work of
    one party: a multicast and the event that caused it)."""
    session = _open(opened)
    assert [r["kind"] for r in session.stepper.trace] == ["REQUEST"]  # sent on start, at 0
    session.step("message")
    assert session.now_ns == 10_000_000
    assert [r["kind"] for r in session.stepper.trace if r["event"] == "send"][1:] == [
        "PRE-PREPARE"] * 3
    session.step("phase")
    last = session.stepper.trace[-1]
    assert session.now_ns == 20_000_000
    assert last["event"] == "pre-prepare" and last["node"] != "hospital-1"  # a backup accepts
    with pytest.raises(UsageError, match="step: expected one of event, message, phase"):
        session.step("sideways")


def test_the_state_is_read_from_the_replicas(opened: list[Session]) -> None:
    session = _open(opened)
    session.advance_to(35_000_000)  # seq 1: PREPAREs arrived at 30 ms, COMMITs on their way
    state = session.poll(session.gen, 0)["state"]
    node = state["nodes"]["hospital-2"]
    assert (node["view"], node["active"], node["crashed"], node["lastExec"]) == (0, True, False,
                                                                                 0)
    assert node["high"] - node["low"] == 256
    slot = node["slots"][0]
    assert (slot["seq"], slot["phase"]) == (1, "prepared")
    assert slot["prepares"] >= 2 and slot["commits"] < 3
    assert "blocks" in node["ledger"]
    session.advance_to(45_000_000)
    node = session.poll(session.gen, 0)["state"]["nodes"]["hospital-2"]
    assert node["lastExec"] == 1 and node["slots"][0]["phase"] == "executed"


def test_the_ledger_panel_shows_lot_statuses_and_a_patients_consents(
        opened: list[Session], monkeypatch: pytest.MonkeyPatch) -> None:
    session = _open(opened, ROOT / "scenarios" / "vaccine-recall.yaml", "duration=4200ms")
    session.advance_to(3_900_000_000)  # the recall is issued at 4 s
    state = session.poll(session.gen, 0)["state"]
    for node in state["nodes"].values():
        assert {lot["status"] for lot in node["book"]["lots"]} == {"active"}
    session.advance_to(4_100_000_000)
    state = session.poll(session.gen, 0)["state"]
    total = len(session.stepper.run.app.ledgers["hospital-1"].state.tables["lots"])
    for node in state["nodes"].values():
        book = node["book"]
        # recalled first, then the newest; bounded, the rest counted
        assert book["lots"][0] == {"lot": "LOT-0614141-160", "status": "recalled",
                                   "recall": "recall-520"}
        assert [lot["status"] for lot in book["lots"][1:]] == ["active"] * 19
        assert total > 20 and book["lots_more"] == total - 20
    # the consents of the pseudonym changed last (by default), or of the one asked for
    assert state["patient"] in state["patients"] and len(state["patients"]) > 1
    other = next(p for p in state["patients"] if p != state["patient"])
    book = session.poll(session.gen, 0, other)["state"]["nodes"]["hospital-2"]["book"]
    assert book["patient"] == other and book["consents"]
    assert all(c["status"] in ("in force", "revoked", "outside its period")
               for c in book["consents"])
    monkeypatch.setattr("medbft.studio.session.SHOWN_CONSENTS", 1)
    shown = session.poll(session.gen, 0, other)["state"]["nodes"]["hospital-2"]["book"]
    assert shown["consents"] == book["consents"][:1]
    assert shown["consents_more"] == len(book["consents"]) - 1 + book["consents_more"]
    with pytest.raises(UsageError, match="patient: expected a pseudonym"):
        session.poll(session.gen, 0, 7)  # type: ignore[arg-type]


def test_the_ledger_panel_shows_a_revoked_consent_and_nothing_for_kv(
        opened: list[Session]) -> None:
    session = _open(opened, ROOT / "scenarios" / "consent-race.yaml", "duration=2500ms")
    session.advance_to(2_500_000_000)
    state = session.poll(session.gen, 0)["state"]
    for node in state["nodes"].values():
        consent = node["book"]["consents"][0]
        assert node["book"]["patient"] == state["patient"]
        # the race: the latest consent changed was granted and revoked at once
        assert consent["consent_id"].startswith("consent-") and consent["grantee"] in (
            "hospital-1", "hospital-2")
        assert (consent["purposes"], consent["status"]) == (["TREAT"], "revoked")
        assert consent["revoked_height"] > consent["granted_height"]
    assert all(p.startswith("pp:") for p in state["patients"])  # pseudonyms only
    kv = _open(opened, BASELINE, "duration=200ms", "workload.app=kv")
    kv.advance_to(100_000_000)
    state = kv.poll(kv.gen, 0)["state"]
    assert "patients" not in state
    assert all(node["book"] is None for node in state["nodes"].values())


def test_a_fork_shows_in_the_live_verdicts(opened: list[Session]) -> None:
    session = _open(opened, ROOT / "scenarios" / "f-plus-one-equivocators.yaml",
                    "duration=2200ms")
    session.advance_to(1_500_000_000)
    assert session.poll(session.gen, 0)["safety_ok"] is True
    session.advance_to(2_200_000_000)
    poll = session.poll(session.gen, 0)
    assert poll["safety_ok"] is False
    assert poll["honest"] == ["hospital-2", "regulator-1"]
    fork = poll["state"]["forks"][0]
    assert sorted(n for nodes in fork["digests"].values() for n in nodes) == [
        "hospital-2", "regulator-1"]
    assert len(fork["digests"]) == 2
    assert poll["state"]["nodes"]["hospital-1"]["byz"] == "equivocate"


def test_bad_actions_are_refused_and_leave_the_session_unchanged(opened: list[Session]) -> None:
    session = _open(opened)
    session.advance_to(100_000_000)
    for action, message in [
            ({"kind": "explode"}, "kind must be one of crash, recover"),
            ({"kind": "crash"}, "node missing"),
            ({"kind": "crash", "node": "hospital-9"}, "unknown replica 'hospital-9'"),
            ({"kind": "byzantine", "node": "hospital-1", "behavior": "lie"},
             "behavior must be one of silent, equivocate"),
            ({"kind": "request", "client": "client-9"}, "unknown client 'client-9'")]:
        with pytest.raises(UsageError, match=message):
            session.act(action)
    with pytest.raises(ScenarioError, match="latency"):
        session.act({"kind": "link", "between": ["hospital-1", "hospital-2"],
                     "latency": "fast"})
    assert session.actions == [] and session.gen == 0
    with pytest.raises(UsageError, match="no what-if action"):
        session.undo()


@pytest.mark.asyncio
async def test_the_http_api(tmp_path: Path, opened: list[Session]) -> None:
    session = _open(opened)
    async with TestClient(TestServer(make_app(session, tmp_path))) as client:
        page = await (await client.get("/")).text()
        assert '"mode":"studio"' in page and "medbft studio: baseline" in page
        res = await client.post("/api/advance", json={"to_ns": 60_000_000, "gen": -1,
                                                      "since": 0})
        first = await res.json()
        assert first["now_ns"] == 60_000_000 and first["rows"] and first["narration"]
        res = await client.post("/api/action", json={
            "action": {"kind": "byzantine", "node": "pharmacy-1", "behavior": "silent"},
            "gen": first["gen"], "since": len(first["rows"])})
        acted = await res.json()
        assert acted["gen"] == first["gen"] + 1
        assert acted["actions"] == ["{at: 60ms, behavior: silent, byzantine: pharmacy-1}"]
        assert acted["state"]["nodes"]["pharmacy-1"]["byz"] == "silent"
        # a patient no replica knows: the panel falls back to the latest changed (none yet)
        polled = await (await client.post("/api/poll", json={
            "gen": acted["gen"], "since": 10**9, "patient": "pp:nobody"})).json()
        assert (polled["state"]["patients"], polled["state"]["patient"]) == ([], None)
        assert polled["state"]["nodes"]["hospital-2"]["book"]["consents"] == []
        bad = await client.post("/api/poll", json={"patient": ["pp:x"]})
        assert bad.status == 400 and "patient" in (await bad.json())["error"]
        bad = await client.post("/api/seek", json={"t_ns": "soon"})
        assert bad.status == 400 and "t_ns" in (await bad.json())["error"]
        bad = await client.post("/api/action", json={"action": "crash"})
        assert bad.status == 400
        saved = await (await client.post("/api/save", json={})).json()
        assert Path(saved["path"]).exists() and saved["command"].startswith("medbft run ")
        text = await (await client.get("/api/scenario.yaml")).text()
        assert "byzantine: pharmacy-1" in text


def test_the_command_refuses_bad_input(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["studio", str(tmp_path / "missing.yaml"), "--no-browser"]) == 2
    assert main(["studio", str(BASELINE), "--port", "70000", "--no-browser"]) == 2
    assert "--port: expected 0 to 65535" in capsys.readouterr().err
    assert main(["studio", str(BASELINE), "--save-dir", str(tmp_path / "no"),
                 "--no-browser"]) == 2
    assert "--save-dir" in capsys.readouterr().err


def test_a_request_fault_must_name_a_client(tmp_path: Path) -> None:
    text = BASELINE.read_text().replace(
        "expect:", "faults:\n  - {at: 1s, request: client-2}\nexpect:")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=r"faults\[0\]\.request: unknown client 'client-2'"):
        load_scenario(path)


@pytest.mark.real
@pytest.mark.slow
def test_the_command_serves_on_loopback_and_stops_on_a_signal(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import urllib.request

    proc = subprocess.Popen(
        [sys.executable, "-m", "medbft", "studio", str(BASELINE), "--port", "0",
         "--no-browser", "--set", "duration=1s", "--save-dir", str(tmp_path)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "medbft studio: baseline at http://127.0.0.1:" in line, line
        url = line.split(" at ")[1].split(" ")[0]
        with urllib.request.urlopen(url, timeout=30) as res:
            assert "medbft studio: baseline" in res.read().decode()
        request = urllib.request.Request(url + "api/step", data=b'{"what": "phase"}',
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as res:
            assert json.loads(res.read())["now_ns"] > 0
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "medbft studio: stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
