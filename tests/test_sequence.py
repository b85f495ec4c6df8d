"""`medbft sequence`: a run's messages step by step, narrated and drawn
(medbft/views/sequence.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from medbft.cli import main
from medbft.views.sequence import Excerpt, Sent, TraceError, load_sequence, narrate, request_window
from medbft.views.sequence_chart import KIND_COLOURS, forked, sequence_chart
from medbft.views.style import style

ROOT = Path(__file__).parent.parent
BASELINE = str(ROOT / "scenarios" / "baseline.yaml")
PRIMARY_CRASH = str(ROOT / "scenarios" / "primary-crash.yaml")


def _run(tmp_path: Path, scenario: str, *sets: str) -> Path:
    out = tmp_path / "run"
    args = ["run", scenario, "--out", str(out), "--trace", "--no-plots", "--quiet"]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 0
    return out


def test_the_first_request_of_the_normal_case_step_by_step(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Baseline (n = 4, 10 ms links): the textbook picture, five hops, 2n^2 - n + 1 = 29
    messages, each kind explained once; the chart is written."""
    out = _run(tmp_path, BASELINE, "duration=300ms")
    capsys.readouterr()
    assert main(["sequence", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    steps = [line for line in lines if " ms  " in line]
    assert steps[0].split("  ")[-1] == "client-1 -> hospital-1: REQUEST (arrives at 10 ms)"
    sends = [line.split(" ms  ")[1] for line in steps if " -> " in line]
    assert [s.split(": ")[1].split(" ")[0] for s in sends] == (
        ["REQUEST", "PRE-PREPARE"] + ["PREPARE"] * 3 + ["COMMIT"] * 4 + ["REPLY"] * 4)
    assert "hospital-1 -> hospital-2, pharmacy-1, regulator-1: PRE-PREPARE" in sends[1]
    assert not any("hospital-1 -> " in s and "PREPARE (" in s and "PRE-" not in s
                   for s in sends), "the primary sends no PREPARE"
    assert sum(1 for line in lines if "(a replica that is prepared" in line) == 1
    assert any("hospital-1: committed seq 1 view 0" in line for line in steps)
    assert steps[-1].endswith("client-1: accept view 0 client-1/0/1, 2 matching replies")
    chart = out / "plots" / "sequence-first-request.png"
    assert chart.stat().st_size > 0
    assert (out / "plots" / "sequence-first-request.svg").stat().st_size > 0
    # `medbft plot` draws the run's own chart beside it, never over it.
    before = chart.read_bytes()
    assert main(["plot", str(out), "--formats", "png"]) == 0
    assert chart.read_bytes() == before
    assert (out / "plots" / "sequence.png").stat().st_size > 0

    start, end = request_window(out, None)
    assert (start, end) == (0, 50_000_000 - 1)
    excerpt = load_sequence(out, start, end)
    assert len(excerpt.messages) == 29
    assert excerpt.lanes == ["client-1", "hospital-1", "hospital-2", "pharmacy-1", "regulator-1"]
    assert [s.t_ns for s in excerpt.steps if s.event == "accept"] == [50_000_000]
    fig = _drawn(excerpt)
    assert _texts(fig, "quorum-note") == {"2f = 2 PREPAREs → prepared",
                                          "2f+1 = 3 COMMITs → committed",
                                          "f+1 = 2 matching REPLYs → accepted"}
    assert _tick(fig, "hospital-1") == "hospital-1\nprimary v0"
    assert _tick(fig, "hospital-2") == "hospital-2"
    assert not _gids(fig, "lost") and not _gids(fig, "cut")


def test_a_view_change_after_the_primary_crashed(crash_run: Path) -> None:
    excerpt = load_sequence(crash_run, 4_500_000_000, 4_600_000_000, max_messages=10_000)
    assert "hospital-1" in excerpt.down, "the crashed primary's lane is marked down"
    text = "\n".join(narrate(excerpt, explain=False))
    assert "VIEW-CHANGE" in text and "hospital-2 -> hospital-1, pharmacy-1, regulator-1: NEW-VIEW" \
        in text
    assert "hospital-2: enter-view view 1" in text
    assert "prepared seq" in text
    assert "hospital-2: view-change view 1 (its timer for client-1/0/62 expired)" in text
    assert "lost to hospital-1 (crashed)" in text
    assert excerpt.primaries == [(4_500_000_000, 0, "hospital-1"),
                                 (4_550_000_000, 1, "hospital-2")]


def test_the_view_change_chart_shows_cause_primaries_and_lost_messages(crash_run: Path) -> None:
    excerpt = load_sequence(crash_run, 4_500_000_000, 4_560_000_000)
    to_dead = [m for m in excerpt.messages if m.dst == "hospital-1"]
    assert to_dead and all(m.lost and m.reason == "crashed" for m in to_dead)
    fig = _drawn(excerpt)
    assert _texts(fig, "cause-note") == {"view change: its timer for client-1/0/62 expired"}
    assert _texts(fig, "primary-label") == {"primary v1"}
    assert _tick(fig, "hospital-1") == "hospital-1\nprimary v0\ncrashed"
    dead_x = excerpt.lanes.index("hospital-1")
    arrows = [a for a in fig.findobj(lambda a: str(a.get_gid()).startswith("msg-"))]
    assert arrows and all(a.xy[0] != dead_x for a in arrows), "nothing drawn as delivered"
    assert len(_gids(fig, "lost")) == len(to_dead)
    assert _gids(fig, "lane-crashed")


def test_new_view_and_pre_prepare_are_told_apart() -> None:
    a, b = (to_rgb(KIND_COLOURS[k]) for k in ("NEW-VIEW", "PRE-PREPARE"))
    assert sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) ** 0.5 > 0.4
    colours = [KIND_COLOURS[k] for k in KIND_COLOURS]
    assert len(set(colours)) == len(colours)


def test_lost_messages_are_narrated(tmp_path: Path) -> None:
    out = _run(tmp_path, BASELINE, "duration=1s", "network.loss=0.2")
    excerpt = load_sequence(out, 0, 1_000_000_000, max_messages=10_000)
    lost = [m for m in excerpt.messages if m.lost]
    assert lost
    text = "\n".join(narrate(excerpt, explain=False))
    assert text.count("; lost to ") == len({(m.t_ns, m.src, m.kind) for m in lost})


def test_nodes_narrow_the_excerpt(tmp_path: Path) -> None:
    out = _run(tmp_path, BASELINE, "duration=300ms")
    two = load_sequence(out, 0, 49_999_999, nodes=["hospital-1", "hospital-2"])
    assert {(m.src, m.dst) for m in two.messages} <= {("hospital-1", "hospital-2"),
                                                       ("hospital-2", "hospital-1")}


def _groups(messages: list[Sent]) -> Counter[tuple[int, str, str]]:
    return Counter((m.t_ns, m.src, m.kind) for m in messages)


@pytest.mark.parametrize("cap", [1, 10, 30, 100, 400])
def test_the_message_cap_cuts_between_instants_never_inside_a_multicast(
        crash_run: Path, cap: int) -> None:
    """After the NEW-VIEW each backup sends 29 rounds of PREPAREs at one instant: a cap in the
    middle of them used to print 'PREPARE x28'. The excerpt now stops before the instant."""
    start, end = 4_540_000_000, 4_600_000_000
    whole = load_sequence(crash_run, start, end, max_messages=10**6)
    assert whole.cut_ns is None and whole.truncated == 0
    try:
        capped = load_sequence(crash_run, start, end, max_messages=cap)
    except TraceError as exc:
        assert cap < len([m for m in whole.messages if m.t_ns == start])
        assert "alone has more than --max-messages" in str(exc)
        return
    assert capped.cut_ns is not None and len(capped.messages) <= cap
    shown, everything = _groups(capped.messages), _groups(whole.messages)
    assert all(everything[g] == count for g, count in shown.items()), "a multicast cut"
    assert all(m.t_ns < capped.cut_ns for m in capped.messages)
    assert all(s.t_ns < capped.cut_ns for s in capped.steps)
    left = [m for m in whole.messages if m.t_ns >= capped.cut_ns]
    assert capped.truncated == len(left) == len(whole.messages) - len(capped.messages)
    per_dst = Counter((m.t_ns, m.src, m.kind, m.dst) for m in left)
    rounds = {(t, src, kind): max(c for k, c in per_dst.items() if k[:3] == (t, src, kind))
              for t, src, kind, _ in per_dst}
    assert capped.truncated_groups == sum(rounds.values()) >= len(_groups(left))
    counts = {line.split(": ", 1)[1] for line in narrate(whole, explain=False) if " -> " in line}
    for line in narrate(capped, explain=False):
        if " -> " in line:
            assert line.split(": ", 1)[1] in counts, line
    trailer = narrate(capped)[-1]
    assert trailer.startswith(f"... cut at {capped.cut_ns / 1e6:.3f} ms by --max-messages")
    assert f"the {capped.truncated} messages ({capped.truncated_groups} multicasts)" in trailer
    assert _texts(_drawn(capped), "cut-note") == {
        f"cut: {capped.truncated} more messages ({capped.truncated_groups} multicasts) to "
        f"4600 ms not drawn"}


@pytest.mark.parametrize(("extra", "message"), [
    (["--from", "1s"], "--from and --to go together"),
    (["--from", "5s", "--to", "6s"], "nothing happened between 5000 ms and 6000 ms"),
    (["--from", "2s", "--to", "1s"], "the window ends"),
    (["--request", "client-9/0/1"], "no committed request 'client-9/0/1'"),
    (["--from", "soon", "--to", "1s"], "--from/--to"),
])
def test_bad_windows_exit_2_with_a_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          extra: list[str], message: str) -> None:
    out = _run(tmp_path, BASELINE, "duration=300ms")
    capsys.readouterr()
    assert main(["sequence", str(out), *extra]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("trace", "message"), [
    (None, "run the scenario with `medbft run --trace`"),
    ('{"t": 0, "event": "crash", "node": "hospital-1"}\nnot json\n',
     "trace.jsonl:2: not a JSON line"),
    ('{"t": 0, "event": "send", "node": "client-1"}\n',
     "trace.jsonl:1: a send event without to, kind"),
    ('{"t": 0, "event": "send", "node": "client-1", "to": "hospital-1", "kind": "REQUEST", '
     '"lost": false}\n', "no arrival times; run the scenario again"),
])
def test_a_run_without_a_trace_or_with_a_broken_one_exits_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], trace: str | None,
        message: str) -> None:
    out = tmp_path / "plain"
    assert main(["run", BASELINE, "--out", str(out), "--set", "duration=200ms", "--no-plots",
                 "--quiet"]) == 0
    if trace is not None:
        (out / "trace.jsonl").write_text(trace)
    capsys.readouterr()
    assert main(["sequence", str(out)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_a_traced_run_has_the_chart_in_its_figures_and_report(tmp_path: Path) -> None:
    traced, plain = tmp_path / "traced", tmp_path / "plain"
    assert main(["run", BASELINE, "--out", str(traced), "--trace", "--quiet",
                 "--set", "duration=200ms"]) == 0
    assert main(["run", BASELINE, "--out", str(plain), "--quiet", "--set", "duration=200ms"]) == 0
    assert (traced / "plots" / "sequence.png").exists()
    assert 'id="fig-sequence"' in (traced / "report.html").read_text()
    assert not (plain / "plots" / "sequence.png").exists()
    assert 'id="fig-sequence"' not in (plain / "report.html").read_text()


def test_the_fork_of_colluding_equivocators_shows_two_digests_at_one_seq(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(tmp_path, str(ROOT / "scenarios" / "f-plus-one-equivocators.yaml"),
               "duration=2.5s")
    start, end = request_window(out, "client-1/0/41")
    excerpt = load_sequence(out, start, end)
    executed = {s.node: s.fields["digest"] for s in excerpt.steps
                if s.event == "execute" and s.fields.get("seq") == 41}
    assert len(set(executed.values())) == 2, executed
    assert excerpt.byzantine == {"hospital-1": "equivocate", "pharmacy-1": "equivocate"}
    honest = {node: d[:8] for node, d in executed.items() if node not in excerpt.byzantine}
    assert sorted(honest) == ["hospital-2", "regulator-1"]
    assert len(set(honest.values())) == 2

    assert forked(excerpt) == {41: list(dict.fromkeys(
        m.digest for m in excerpt.messages if m.kind == "PRE-PREPARE"))}
    fig = _drawn(excerpt)
    assert _texts(fig, "digest-label") == set(honest.values())
    assert _texts(fig, "fork-note") == {f"executed\n{d}" for d in honest.values()}
    assert len(_gids(fig, "lane-byzantine")) == 2
    assert _tick(fig, "hospital-1") == "hospital-1\nprimary v0\nByzantine (equivocate)"
    assert _tick(fig, "pharmacy-1") == "pharmacy-1\nByzantine (equivocate)"
    legend = {t.get_text() for t in fig.legends[0].get_texts()}
    assert {f"seq 41: digest {d}" for d in honest.values()} <= legend

    capsys.readouterr()
    assert main(["sequence", str(out), "--request", "client-1/0/41", "--brief"]) == 0
    lines = capsys.readouterr().out.splitlines()
    pre_prepare = next(line for line in lines if ": PRE-PREPARE" in line)
    assert (f"seq 41: digest {honest['hospital-2']} to hospital-2 and pharmacy-1, "
            f"{honest['regulator-1']} to regulator-1") in pre_prepare
    assert (out / "plots" / "sequence-request-client-1-0-41.png").exists()


# -- helpers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crash_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """primary-crash for 5 s: the primary crashes at 3 s; view 1 at 4.55 s."""
    return _run(tmp_path_factory.mktemp("crash"), PRIMARY_CRASH, "duration=5s")


def _drawn(excerpt: Excerpt) -> Figure:
    with style():
        fig = sequence_chart(excerpt)
        fig.canvas.draw()
    return fig


def _gids(fig: Figure, gid: str) -> list[Any]:
    return fig.findobj(lambda a: a.get_gid() == gid)


def _texts(fig: Figure, gid: str) -> set[str]:
    return {a.get_text() for a in _gids(fig, gid)}


def _tick(fig: Figure, party: str) -> str:
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    return next(label for label in labels if label.split("\n")[0] == party)
