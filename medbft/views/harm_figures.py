"""The harm figure of docs/harm.md: what PBFT ends and what it does not, from measured runs.

Why this exists: the claim "PBFT guarantees agreement, not fairness" is easy to state and easy
to doubt. This figure shows it from runs of the shipped scenarios, each next to its honest
twin: how long harm was possible (the longest protective window: a recall or a revocation
waiting to be ordered, a false reply waiting to be outvoted) and how each window was closed
(normal case, a view change, f+1 matching replies, or the false reply accepted), and how many
unfair orderings and how many harm events each run counted.

`python -m medbft.views.harm_figures OUT.png` runs the pairs (`PAIRS`, a few seconds each)
and writes the figure; `draw(runs, stem)` draws summaries the caller measured.
What it must not know: how harm is judged (it reads summary.json's `harm` section).
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from medbft.views.style import PALETTE, figure, save, style

__all__ = ["CLOSED_COLOURS", "PAIRS", "draw", "measure"]

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
#: How each window ended -> its colour.
CLOSED_COLOURS = {"normal-case": PALETTE["blue"], "view-change": PALETTE["green"],
                  "f+1 matching replies": PALETTE["sky"],
                  "accepted the false reply": PALETTE["vermillion"],
                  "still open at the end of the run": PALETTE["black"]}
Pair = tuple[str, str, str, list[dict[str, Any]] | None]
#: (label, window kind shown, scenario file, the faults to run it with: None = as shipped,
#: [] = honest).
PAIRS: tuple[Pair, ...] = (
    ("recall, honest primary", "recall-pending", "censored-recall", []),
    ("recall, censor-kind primary", "recall-pending", "censored-recall", None),
    ("revocation, honest primary", "revocation-pending", "consent-front-running", []),
    ("revocation, front-run-revoke", "revocation-pending", "consent-front-running", None),
    ("reply, 1 false-reply (f)", "false-reply", "consent-race",
     [{"at": "0s", "byzantine": "hospital-2", "behavior": "false-reply"}]),
    ("reply, 2 false-reply (f+1)", "false-reply", "consent-race",
     [{"at": "0s", "byzantine": "hospital-2", "behavior": "false-reply"},
      {"at": "0s", "byzantine": "pharmacy-1", "behavior": "false-reply"}]),
)


def measure(pairs: Sequence[Pair] = PAIRS) -> list[tuple[str, str, dict[str, Any]]]:
    """Run each pair and return (label, window kind, summary) in order."""
    from medbft.scenario import parse_scenario
    from sim.run import run_scenario

    out = []
    for label, kind, name, faults in pairs:
        raw = yaml.safe_load((SCENARIOS / f"{name}.yaml").read_text())
        if faults is not None:
            raw = {**copy.deepcopy(raw), "faults": faults}
            raw.get("expect", {}).pop("harm_unfair", None)
            raw.get("expect", {}).pop("view_changes", None)
        out.append((label, kind, run_scenario(parse_scenario(raw, f"{name}.yaml")).summary))
    return out


def _longest(summary: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The run's longest window of `kind`, listed or not (window_stats has the longest of
    each kind; a window left unlisted was closed in the normal case with nothing exposed)."""
    harm = summary["harm"]
    listed = sorted((w for w in harm["windows"] if w["kind"] == kind),
                    key=lambda w: -w["duration_s"])
    stats = harm["window_stats"].get(kind)
    if listed and (stats is None or listed[0]["duration_s"] >= stats["max_duration_s"]):
        return listed[0]
    if stats is None:
        return None
    return {"kind": kind, "duration_s": stats["max_duration_s"], "closed_by": "normal-case"}


def draw(runs: Sequence[tuple[str, str, dict[str, Any]]], stem: Path,
         formats: Sequence[str] = ("png",)) -> list[Path]:
    """Two panels: (a) the longest harm window of each run, coloured by what closed it;
    (b) unfair orderings and harm events per run."""
    labels = [label for label, _, _ in runs]
    y = list(range(len(runs)))[::-1]
    with style():
        fig, (left, right) = figure(3.0, 1, 2, sharey=True,
                                    gridspec_kw={"width_ratios": [3, 2]})
        seen: set[str] = set()
        for pos, (_, kind, summary) in zip(y, runs, strict=True):
            window = _longest(summary, kind)
            if window is None:
                continue
            closed = window["closed_by"]
            left.barh(pos, window["duration_s"] * 1000, color=CLOSED_COLOURS.get(
                closed, PALETTE["grey"]), label=None if closed in seen else closed)
            seen.add(closed)
        left.set_xscale("log")
        left.set_xlabel("longest harm window (ms)")
        left.set_yticks(y, labels)
        left.legend(loc="lower right", title="closed by", title_fontsize=6.5)
        left.set_title("(a) how long harm was possible")
        height = 0.38
        unfair = [s["harm"]["unfair"]["events"] for _, _, s in runs]
        events = [s["harm"]["events"] for _, _, s in runs]
        right.barh([p + height / 2 for p in y], unfair, height, color=PALETTE["orange"],
                   label="unfair orderings")
        right.barh([p - height / 2 for p in y], events, height, color=PALETTE["vermillion"],
                   label="harm events")
        for p, u, e in zip(y, unfair, events, strict=True):
            right.text(u, p + height / 2, f" {u}", va="center", fontsize=6)
            right.text(e, p - height / 2, f" {e}", va="center", fontsize=6)
        right.set_xlabel("count per run")
        right.set_xlim(0, max([*unfair, *events, 1]) * 1.3)
        right.legend(loc="upper right")
        right.set_title("(b) what happened")
        fig.set_size_inches(7.0, 3.0)
        return save(fig, stem, formats)


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m medbft.views.harm_figures OUT.png (e.g. docs/img/harm.png)",
              file=sys.stderr)
        return 2
    out = Path(argv[0])
    for path in draw(measure(), out.parent / out.stem):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
