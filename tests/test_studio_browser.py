"""The studio and replay pages in a real browser: headless Chromium from the distribution's
packages, driven over the DevTools protocol (tests/cdp.py).

Checked where the script runs: the pages load without a console error or an uncaught
exception; play advances virtual time; clicking a replica's name and "crash" changes its state
card and its lane; the scenario saved from the page is reproduced by `medbft run` (same summary
digest as the session); the ledger panel lists vaccine-recall's recalled lot once the recall
commits; the replay page makes no network request and shows the fork of
f-plus-one-equivocators (the two Byzantine lanes, the two digests, which honest replica executed
which). Without Chromium the tests skip, except under CI, where they fail. The server listens on
loopback only.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from medbft.cli import main
from medbft.scenario import load_scenario
from medbft.studio.server import make_app
from medbft.studio.session import Session
from sim.run import digest_summary
from tests.cdp import Browser, chromium

ROOT = Path(__file__).parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]


async def _serve(session: Session, save_dir: Path) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(make_app(session, save_dir), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/"


@pytest_asyncio.fixture
async def studio(tmp_path: Path) -> AsyncIterator[tuple[Session, str]]:
    chromium()
    # built in a thread, as the server runs it: a virtual-time loop cannot run inside this one
    session = await asyncio.to_thread(
        Session, load_scenario(ROOT / "scenarios" / "baseline.yaml", ["duration=2s"]))
    runner, url = await _serve(session, tmp_path)
    try:
        yield session, url
    finally:
        await runner.cleanup()


async def _medbft(*argv: str) -> int:
    """`medbft ARGV` in a thread (the simulator's loop cannot run inside the test's)."""
    return await asyncio.to_thread(main, list(argv))


async def _click(browser: Browser, selector: str) -> None:
    """A real mouse click at the middle of the element."""
    box = await browser.eval(f"""(() => {{ const r = document.querySelector({json.dumps(selector)})
        .getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; }})()""")
    for kind in ("mousePressed", "mouseReleased"):
        await browser.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1],
                           button="left", clickCount=1)


def _clock(text: Any) -> float:
    return float(str(text).split("=")[1].split("ms")[0])


async def test_the_studio_plays_crashes_and_saves_a_reproducible_scenario(
        studio: tuple[Session, str], tmp_path: Path) -> None:
    session, url = studio
    async with Browser() as b:
        await b.goto(url, "document.querySelectorAll('.card').length === 4")
        assert b.errors() == []
        assert await b.eval("document.getElementById('whatif').hidden") is False
        # play advances virtual time; pause stops it
        await _click(b, "#play")
        await b.wait_for("parseFloat(document.getElementById('clock').textContent"
                         ".split('=')[1]) > 40")
        await _click(b, "#play")
        await asyncio.sleep(0.3)
        paused = _clock(await b.eval("document.getElementById('clock').textContent"))
        assert paused > 40
        await asyncio.sleep(0.5)
        assert _clock(await b.eval("document.getElementById('clock').textContent")) == paused
        assert await b.eval("document.querySelectorAll('#lanes line.msg').length") > 0
        # crash the primary by clicking its name, then its menu
        lane = "text.lane-name[data-node='hospital-1']"
        assert "primary" in await b.eval(
            "document.querySelector(\"text.lane-tags[data-node='hospital-1']\").textContent")
        await _click(b, lane)
        await b.wait_for("!document.getElementById('menu').hidden")
        await _click(b, "#menu button[data-act='crash']")
        await b.wait_for("document.querySelector(\".card[data-node='hospital-1']\")"
                         ".classList.contains('crashed')")
        assert "crashed" in await b.eval(
            "document.querySelector(\"text.lane-tags[data-node='hospital-1']\").textContent")
        assert await b.eval("document.querySelectorAll(\"rect.down[data-node='hospital-1']\")"
                            ".length") == 1
        assert session.stepper.run.runtimes["hospital-1"].crashed
        assert "crash: hospital-1" in await b.eval(
            "document.getElementById('actions').textContent")
        # the view changes: a backup becomes primary of view 1 (step by protocol events)
        for _ in range(200):
            if await b.eval("document.querySelector(\".card[data-node='hospital-2'] "
                            ".tag.primary\") !== null"):
                break
            await _click(b, "#step-phase")
            await asyncio.sleep(0.05)
        assert await b.eval("document.querySelector(\".card[data-node='hospital-2'] .view\")"
                            ".textContent") == "1"
        # save; the file reproduces the session
        await _click(b, "#save")
        saved = await b.wait_for("document.getElementById('saved').textContent")
        assert "saved:" in saved and "medbft run" in saved, saved
        assert b.errors() == []
    path = Path(saved.split("saved: ")[1].split(" ")[0])
    out = tmp_path / "ran"
    assert await _medbft("run", str(path), "--out", str(out), "--no-plots", "--quiet") in (0, 1)
    result = await asyncio.to_thread(session.stepper.finish)
    ran = json.loads((out / "summary.json").read_text())
    assert digest_summary({**ran, "wall_time_s": 0.0}) == digest_summary(
        {**result.summary, "wall_time_s": 0.0})
    assert ran["view_changes"] >= 1


async def test_the_ledger_panel_shows_the_recalled_lot(tmp_path: Path) -> None:
    """vaccine-recall: once the recall commits (4 s) every replica's card lists the lot as
    recalled; choosing a patient shows that pseudonym's consents."""
    chromium()
    session = await asyncio.to_thread(Session, load_scenario(
        ROOT / "scenarios" / "vaccine-recall.yaml", ["duration=4200ms"]))
    runner, url = await _serve(session, tmp_path)
    recalled = ("[...document.querySelectorAll('.card .lots td.st-recalled')]"
                ".map(td => td.closest('.card').dataset.node + ' ' + td.textContent)")
    try:
        async with Browser() as b:
            await b.goto(url, "document.querySelectorAll('.card .ledger').length === 4")
            assert await b.eval(recalled) == []
            await b.eval("studio.seek(4100 * 1e6)")
            await b.wait_for(f"{recalled}.length === 4")
            assert await b.eval(recalled) == [
                f"{n} recalled (recall-520)" for n in session.ids]
            assert await b.eval("document.querySelector('.card .lots tr.lot td')"
                                ".textContent") == "LOT-0614141-160"
            assert await b.eval("document.querySelectorAll('.differs').length") == 0
            assert await b.eval("document.getElementById('ledger-pick').hidden") is False
            patient = await b.eval("document.getElementById('patient').options[1].value")
            await b.eval("(() => { const s = document.getElementById('patient');"
                         " s.selectedIndex = 1; s.dispatchEvent(new Event('change')); })()")
            await b.wait_for("document.querySelector('.card .ledger').textContent"
                             f".includes('Consents of {patient}')")
            assert await b.eval("document.querySelectorAll('.card tr.consent').length") > 0
            assert b.errors() == []
    finally:
        await runner.cleanup()


async def test_the_replay_renders_offline_and_shows_the_fork(tmp_path: Path) -> None:
    chromium()
    out = tmp_path / "run"
    assert await _medbft("run", str(ROOT / "scenarios" / "f-plus-one-equivocators.yaml"),
                         "--out", str(out), "--trace", "--no-plots", "--quiet",
                         "--set", "duration=2200ms") == 0
    page = (out / "replay.html").as_uri()
    async with Browser() as b:
        await b.goto(page, "document.querySelectorAll('.card').length === 4")
        assert b.requests == [page], "the page fetched something"
        assert b.errors() == []
        assert await b.eval("document.getElementById('banner').textContent") == ""
        # single steps move time forward
        await _click(b, "#step-message")
        first = _clock(await b.eval("document.getElementById('clock').textContent"))
        await _click(b, "#step-phase")
        assert _clock(await b.eval("document.getElementById('clock').textContent")) > first
        assert await b.eval("document.querySelector('#steps li.now') !== null")
        # scrub to the end: the fork is shown
        await b.eval("(() => { const s = document.getElementById('slider');"
                     " s.value = s.max; s.dispatchEvent(new Event('input')); })()")
        banner = await b.eval("document.getElementById('banner').textContent")
        assert banner.startswith("FORK: honest replicas executed different batches at seq")
        fork = await b.eval("document.getElementById('forks').innerText")
        first_row = fork.split("seq ")[1].splitlines()
        assert sum("hospital-2" in line for line in first_row[:3]) == 1
        assert sum("regulator-1" in line for line in first_row[:3]) == 1
        digests = await b.eval("[...document.querySelectorAll('#forks tr')][0]"
                               ".querySelectorAll('.digest').length")
        assert digests == 2
        for node in ("hospital-1", "pharmacy-1"):
            tags = await b.eval(
                f"document.querySelector(\"text.lane-tags[data-node='{node}']\").textContent")
            assert "byzantine: equivocate" in tags, (node, tags)
            assert await b.eval(f"document.querySelectorAll(\"rect.byz[data-node='{node}']\")"
                                ".length") == 1
        assert "byzantine" not in await b.eval(
            "document.querySelector(\"text.lane-tags[data-node='hospital-2']\").textContent")
        assert await b.eval("document.querySelectorAll('.card .digest.forked').length") > 0
        assert b.errors() == []
        assert b.requests == [page]


def _with_vote_fields(trace: Path) -> None:
    """Give PREPARE and COMMIT sends the view, seq and digest that traces written since the
    trace fields of issue 14 carry (a replica sends its PREPARE when it accepts a PRE-PREPARE,
    its COMMIT when it is prepared: the event at the same instant names them)."""
    rows = [json.loads(line) for line in trace.read_text().splitlines()]
    cause = {"PREPARE": "pre-prepare", "COMMIT": "prepared"}
    events = {(r["t"], r["node"], r["event"]): r for r in rows if "seq" in r}
    for row in rows:
        if row["event"] == "send" and row["kind"] in cause:
            event = events[(row["t"], row["node"], cause[row["kind"]])]
            row.update({k: event[k] for k in ("view", "seq", "digest")})
    trace.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


async def test_the_replay_derives_the_state_the_replicas_hold(tmp_path: Path) -> None:
    """The replay's state cards come from the trace (arrivals count as votes); the studio's
    from the replica objects. For one run at several instants they agree: views, last
    executed, and each slot's phase and PREPARE / COMMIT counts."""
    chromium()
    out = tmp_path / "run"
    baseline = ROOT / "scenarios" / "baseline.yaml"
    assert await _medbft("run", str(baseline), "--out", str(out), "--trace", "--no-plots",
                         "--quiet", "--set", "duration=200ms") == 0
    _with_vote_fields(out / "trace.jsonl")
    assert await _medbft("replay", str(out)) == 0
    session = await asyncio.to_thread(Session, load_scenario(baseline, ["duration=200ms"]))
    try:
        async with Browser() as b:
            await b.goto((out / "replay.html").as_uri(),
                         "document.querySelectorAll('.card').length === 4")
            for t_ms in (25, 35, 45, 95, 140):
                await asyncio.to_thread(session.advance_to, t_ms * 1_000_000)
                live = (await asyncio.to_thread(session.poll, session.gen, 0))["state"]
                derived = await b.eval(f"snapshot({t_ms * 1_000_000})")
                for node, state in live["nodes"].items():
                    mine = derived["nodes"][node]
                    assert (mine["view"], mine["lastExec"]) == (
                        state["view"], state["lastExec"]), (t_ms, node)
                    shown = {s["seq"]: (s["phase"], s["prepares"], s["commits"])
                             for s in mine["slots"]}
                    for slot in state["slots"]:
                        assert shown[slot["seq"]] == (
                            slot["phase"], slot["prepares"], slot["commits"]), (t_ms, node)
            assert b.errors() == []
    finally:
        await asyncio.to_thread(session.close)
