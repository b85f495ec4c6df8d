"""`medbft sequence DIR`: a run's messages and protocol events, step by step, as narrated
lines and a message sequence chart (see `medbft.views.sequence`, `medbft.views.sequence_chart`).

Why this exists: teaching. `medbft run scenarios/baseline.yaml --trace` then `medbft sequence
results/baseline` shows how the first request is agreed, message by message; `--from`/`--to`
show any stretch of a run, such as the view change after a primary crashes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from medbft.cli.sweep import parse_formats
from medbft.errors import UsageError

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser("sequence", help="narrate and draw a run's messages step by step "
                                        "(needs a run made with --trace)")
    p.add_argument("dir", metavar="DIR", help="a directory written by `medbft run --trace`")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--request", metavar="KEY",
                       help="the request to follow, e.g. client-1/0/3 (default: the first one "
                            "committed)")
    which.add_argument("--from", dest="start", metavar="TIME",
                       help="start of the window, e.g. 1.2s (with --to)")
    p.add_argument("--to", dest="end", metavar="TIME", help="end of the window, e.g. 1.5s")
    p.add_argument("--nodes", help="only these parties, comma-separated (e.g. client-1,"
                                   "hospital-1,hospital-2)")
    p.add_argument("--max-messages", type=int, default=400,
                   help="draw and narrate at most this many messages (default 400); the "
                        "excerpt then stops before the instant that would exceed it, so no "
                        "multicast is cut")
    p.add_argument("--brief", action="store_true", help="no explanations, one line per step")
    p.add_argument("--formats", default="png,svg",
                   help="chart formats, from png,svg,pdf (default png,svg)")
    p.add_argument("--out", type=Path,
                   help="chart path without extension (default DIR/plots/sequence-WHAT, "
                        "WHAT: first-request, request-KEY or FROM-TO; `medbft plot` draws "
                        "DIR/plots/sequence)")
    p.set_defaults(handler=handle)


def _window(args: argparse.Namespace, directory: Path) -> tuple[int, int]:
    from medbft.units import parse_duration_ns
    from medbft.views.sequence import request_window

    if args.start is None and args.end is None:
        return request_window(directory, args.request)
    if args.start is None or args.end is None:
        raise UsageError("--from and --to go together, e.g. --from 1s --to 1.2s")
    try:
        return parse_duration_ns(args.start), parse_duration_ns(args.end)
    except ValueError as exc:
        raise UsageError(f"--from/--to: {exc}") from exc


def _chart_name(args: argparse.Namespace, start: int, end: int) -> str:
    """What the chart shows, for its default file name: never `sequence` alone, which is the
    chart of the run's figures (`medbft run`, `medbft plot`), so neither overwrites the other."""
    if args.request:
        return "request-" + "-".join(args.request.split("/"))
    if args.start is not None:
        return f"{start / 1e6:g}ms-{end / 1e6:g}ms"
    return "first-request"


def _parties(directory: Path) -> list[str] | None:
    """The replicas (scenario.yaml) and clients (requests.csv) of the run in `directory`, or
    None when the folder lacks scenario.yaml (an older run: nothing to check against).
    A damaged file raises RunFileError naming it."""
    from medbft.results import read_requests, read_scenario_copy

    if not (directory / "scenario.yaml").exists():
        return None
    scenario = read_scenario_copy(directory / "scenario.yaml")
    nodes = [str(n["id"]) for n in scenario.get("nodes", [])]
    clients: dict[str, None] = {}
    if (directory / "requests.csv").exists():
        clients = dict.fromkeys(row.client for row in read_requests(directory / "requests.csv"))
    return [*nodes, *clients]


def _check_parties(directory: Path, nodes: list[str]) -> None:
    parties = _parties(directory)
    if parties is None:
        return
    unknown = [n for n in nodes if n not in parties]
    if unknown:
        shown = ", ".join(parties[:12]) + (", ..." if len(parties) > 12 else "")
        raise UsageError(f"--nodes: unknown part{'y' if len(unknown) == 1 else 'ies'} "
                         f"{', '.join(unknown)}; this run's parties are {shown}")


def handle(args: argparse.Namespace, console: Console, err: Console) -> int:
    from medbft.views.sequence import TraceError, load_sequence, narrate

    directory = Path(args.dir)
    if not directory.is_dir():
        raise UsageError(f"{directory}: not a directory; expected one written by "
                         f"`medbft run --trace`")
    if args.max_messages < 1:
        raise UsageError(f"--max-messages: at least 1; got {args.max_messages}")
    formats = parse_formats(args.formats)
    nodes = [n.strip() for n in args.nodes.split(",") if n.strip()] if args.nodes else None
    if nodes:
        _check_parties(directory, nodes)
    try:
        start, end = _window(args, directory)
        excerpt = load_sequence(directory, start, end, nodes, args.max_messages)
    except TraceError as exc:
        raise UsageError(str(exc)) from exc
    for line in narrate(excerpt, explain=not args.brief):
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    from medbft.views.sequence_chart import sequence_chart
    from medbft.views.style import save, style

    stem = args.out or directory / "plots" / f"sequence-{_chart_name(args, start, end)}"
    with style():
        written = save(sequence_chart(excerpt), stem, formats)
    console.print(f"chart: {', '.join(str(p) for p in written)}", markup=False)
    return 0
