"""`medbft sequence`: a run's messages step by step, narrated and drawn
(medbft/views/sequence.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medbft.cli import main
from medbft.views.sequence import load_sequence, narrate, request_window

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
    assert (out / "plots" / "sequence.png").stat().st_size > 0
    assert (out / "plots" / "sequence.svg").stat().st_size > 0

    start, end = request_window(out, None)
    assert (start, end) == (0, 50_000_000 - 1)
    excerpt = load_sequence(out, start, end)
    assert len(excerpt.messages) == 29
    assert excerpt.lanes == ["client-1", "hospital-1", "hospital-2", "pharmacy-1", "regulator-1"]


def test_a_view_change_after_the_primary_crashed(tmp_path: Path) -> None:
    out = _run(tmp_path, PRIMARY_CRASH, "duration=5s")
    excerpt = load_sequence(out, 4_500_000_000, 4_600_000_000)
    assert "hospital-1" in excerpt.down, "the crashed primary's lane is marked down"
    text = "\n".join(narrate(excerpt, explain=False))
    assert "VIEW-CHANGE" in text and "hospital-2 -> hospital-1, pharmacy-1, regulator-1: NEW-VIEW" \
        in text
    assert "hospital-2: enter-view view 1" in text
    assert "prepared seq" in text


def test_lost_messages_are_narrated(tmp_path: Path) -> None:
    out = _run(tmp_path, BASELINE, "duration=1s", "network.loss=0.2")
    excerpt = load_sequence(out, 0, 1_000_000_000, max_messages=10_000)
    lost = [m for m in excerpt.messages if m.lost]
    assert lost
    text = "\n".join(narrate(excerpt, explain=False))
    assert text.count("; lost to ") == len({(m.t_ns, m.src, m.kind) for m in lost})


def test_nodes_and_the_message_cap_narrow_the_excerpt(tmp_path: Path) -> None:
    out = _run(tmp_path, BASELINE, "duration=300ms")
    two = load_sequence(out, 0, 49_999_999, nodes=["hospital-1", "hospital-2"])
    assert {(m.src, m.dst) for m in two.messages} <= {("hospital-1", "hospital-2"),
                                                       ("hospital-2", "hospital-1")}
    capped = load_sequence(out, 0, 300_000_000, max_messages=10)
    assert len(capped.messages) == 10 and capped.truncated > 0
    assert "more messages" in narrate(capped)[-1]


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


def test_the_fork_of_colluding_equivocators_shows_two_digests_at_one_seq(tmp_path: Path) -> None:
    out = _run(tmp_path, str(ROOT / "scenarios" / "f-plus-one-equivocators.yaml"),
               "duration=2.5s")
    start, end = request_window(out, "client-1/0/41")
    executed = {s.node: s.fields["digest"] for s in load_sequence(out, start, end).steps
                if s.event == "execute" and s.fields.get("seq") == 41}
    assert len(set(executed.values())) == 2, executed
