"""replay.html: a traced run as one self-contained page that plays it back, message by message.

Why this exists: a static sequence chart and a text log do not let a student pause PBFT, step
through one request's three phases, or see where a fork starts. This module turns a run folder
written by `medbft run --trace` into one HTML file that does: lanes for the clients and the
replicas (coloured by role, the primary, crashed and Byzantine parties marked), messages moving
between them coloured by kind, play / pause / step / speed / a time slider, a state panel per
replica (view, log slots with their phase and quorum counters, last executed, stable
checkpoint, watermarks) derived from the trace at the time shown, the narration of
`medbft sequence` beside the step it explains, and forks (two digests executed at one sequence
number by honest replicas) as they happen.

The page has no external reference at all: the script, the style and the run's data are inline,
so it opens offline, from an archive or a mail attachment. `medbft studio` serves the same page
(`page_html(..., mode="studio")`), fed live by the simulator instead of by embedded data.
It reads only the files a run wrote (trace.jsonl, scenario.yaml, summary.json).
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from medbft.results import read_scenario_copy, read_summary, trace_rows
from medbft.views.sequence import (
    EVENT_NOTES,
    MESSAGE_NOTES,
    TraceError,
    excerpt_from_rows,
    narration,
)

__all__ = [
    "REPLAY_FILE",
    "page_html",
    "page_meta",
    "render_replay",
    "replay_data",
    "step_narration",
    "write_replay",
]

#: The name `medbft run --trace` and `medbft replay` give the page inside a run folder.
REPLAY_FILE = "replay.html"
#: Fields of a trace row the page never reads (kept out of the embedded data).
_UNUSED = ("bytes",)


def _asset(name: str) -> str:
    return resources.files("medbft.views").joinpath("page", name).read_text(encoding="utf-8")


def page_meta(scenario: dict[str, Any], clients: Iterable[str]) -> dict[str, Any]:
    """What the page needs to know about the network, from a scenario in the canonical form
    (`medbft.scenario.to_dict`, as a run folder's scenario.yaml holds it)."""
    nodes = [{"id": str(nd["id"]), "role": str(nd.get("role", ""))}
             for nd in scenario.get("nodes", [])]
    n = len(nodes)
    f = (n - 1) // 3
    protocol = scenario.get("protocol") or {}
    return {
        "name": str(scenario.get("name", "")), "seed": scenario.get("seed"),
        "nodes": nodes, "clients": sorted(set(clients)), "n": n, "f": f,
        "q": -(-(n + f + 1) // 2),  # ⌈(n+f+1)/2⌉, node/quorum.py
        "watermark_window": protocol.get("watermark_window"),
        "checkpoint_interval": protocol.get("checkpoint_interval"),
    }


def step_narration(rows: list[dict[str, Any]], roles: dict[str, str]) -> list[list[Any]]:
    """[t_ns, text, what] per narrated step of `rows` (`medbft.views.sequence.narration`: a
    multicast is one step; `what` keys the notes that explain it)."""
    if not rows:
        return []
    try:
        ex = excerpt_from_rows(rows, roles, int(rows[0]["t"]), int(rows[-1]["t"]),
                               max_messages=len(rows))
    except TraceError:
        return []
    return [[t, text, what] for t, text, what in narration(ex)]


def replay_data(directory: Path) -> dict[str, Any]:
    """The page's data for the run in `directory`. Raises TraceError without a trace."""
    path = directory / "trace.jsonl"
    if not path.exists():
        raise TraceError(f"{path}: no trace; run the scenario with `medbft run --trace` "
                         f"(replay needs every message the run sent)")
    if not (directory / "scenario.yaml").exists():
        raise TraceError(f"{directory / 'scenario.yaml'}: missing; expected a directory "
                         f"written by `medbft run --trace`")
    scenario = read_scenario_copy(directory / "scenario.yaml")
    rows = [{k: v for k, v in row.items() if k not in _UNUSED} for row in trace_rows(path)]
    if not rows:
        raise TraceError(f"{path}: empty; nothing to replay")
    if any(r["event"] == "send" and "arrive" not in r and not r.get("lost") for r in rows):
        raise TraceError(f"{path}: written by an older medbft, whose sends carry no arrival "
                         f"times; run the scenario again with --trace")
    ids = {str(nd["id"]) for nd in scenario.get("nodes", [])}
    clients = {str(r["node"]) for r in rows if r.get("event") == "send"
               and str(r["node"]) not in ids}
    meta = page_meta(scenario, clients)
    summary = read_summary(directory / "summary.json") if (
        directory / "summary.json").exists() else {}
    meta["end_ns"] = max(int(r["t"]) for r in rows)
    meta["byzantine"] = list(summary.get("byzantine", []))
    meta["safety_ok"] = (summary.get("safety") or {}).get("ok")
    roles = {nd["id"]: nd["role"] for nd in meta["nodes"]}
    return {"mode": "replay", "meta": meta, "rows": rows,
            "narration": step_narration(rows, roles)}


def _json_for_script(value: Any) -> str:
    """JSON that is safe inside a <script> element: no `<` at all (so no `</script>`)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=True)
    return text.replace("<", "\\u003c")  # still JSON; no tag can end the element early


def page_html(data: dict[str, Any], title: str) -> str:
    """The page with its style, its script and `data` inline (`data["mode"]` is "replay" or
    "studio")."""
    data = {**data, "notes": {**MESSAGE_NOTES, **EVENT_NOTES}}
    return (_asset("page.html")  # the data last: nothing in it is mistaken for a placeholder
            .replace("/*SCRIPT*/", _asset("page.js"))
            .replace("/*STYLE*/", _asset("page.css"))
            .replace("<!--TITLE-->", html.escape(title))
            .replace("/*DATA*/null", _json_for_script(data)))


def render_replay(directory: Path) -> str:
    data = replay_data(directory)
    meta = data["meta"]
    return page_html(data, f"medbft replay: {meta['name']} (seed {meta['seed']})")


def write_replay(directory: Path, out: Path | None = None) -> Path:
    """Write the replay page of the run in `directory` (default `directory/replay.html`)."""
    target = out or directory / REPLAY_FILE
    target.write_text(render_replay(directory), encoding="utf-8")
    return target
