"""What the terminal shows of a run: the summary table and the lines that name a fork.

Why this exists: `medbft run`, `medbft cluster` and `medbft load` print the same summary, so
they print it with the same code.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

__all__ = ["describe_violations", "per_request", "summary_table"]


def per_request(value: float | None) -> str:
    """Messages per committed request as every table shows it: one decimal (summary.json keeps
    six), '-' when nothing committed."""
    return "-" if value is None else f"{value:.1f}"


def describe_violations(violations: list[dict[str, Any]], limit: int = 3) -> list[str]:
    """One line per safety violation (the first `limit`), naming the sequence number, the
    replicas and what each executed there: what a reader needs to see the fork."""
    lines = []
    for v in violations[:limit]:
        if "digests" in v:
            who = ", ".join(f"{node} {digest[:12]}" for node, digest in v["digests"].items())
            lines.append(f"{v['kind']}: seq {v['seq']}: {who}")
        else:
            where = ", ".join(f"{k} {v[k]}" for k in ("node", "seq", "request") if k in v)
            lines.append(f"{v['kind']}: {where}")
    if len(violations) > limit:
        lines.append(f"... and {len(violations) - limit} more (summary.json, safety.violations)")
    return lines


def summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"{summary['scenario']} (seed {summary['seed']}, n={summary['n']}, "
                        f"f={summary['f']})", show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value")
    lat = summary["latency_ms"]

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    rows = [
        ("requests committed / submitted",
         f"{summary['requests']['committed']} / {summary['requests']['submitted']}"),
        ("throughput", f"{summary['throughput_tps']:.2f} req/s"),
        ("latency p50 / p95 / p99 (ms)", f"{ms(lat['p50'])} / {ms(lat['p95'])} / "
                                         f"{ms(lat['p99'])}"),
        ("latency mean / max (ms)", f"{ms(lat['mean'])} / {ms(lat['max'])}"),
        ("messages (bytes)", f"{summary['messages']['total']} ({summary['messages']['bytes']})"),
        ("messages per committed request",
         per_request(summary["messages"]["per_committed_request"])),
        ("view changes (final view)", f"{summary['view_changes']} ({summary['final_view']})"),
        ("state transfers", str(summary["state_transfers"])),
        ("rejected messages", str(summary["rejected_messages"]["total"])),
        ("safety", "held" if summary["safety"]["ok"] else
         f"VIOLATED ({len(summary['safety']['violations'])})"),
        ("liveness", "held" if summary["liveness"]["ok"] else
         f"lost ({summary['liveness']['unsettled']} unsettled)"),
    ]
    harm = summary.get("harm")  # simulated runs: docs/harm.md
    if harm is not None:
        kinds = ", ".join(f"{k} {v}" for k, v in harm["by_kind"].items())
        rows.append(("harm (unfair orderings)",
                     f"{harm['events']}{f' ({kinds})' if kinds else ''} "
                     f"({harm['unfair']['events']})"))
        for t in harm["tampering"]:
            found = ("not detected" if t["detected_at_s"] is None else
                     f"detected {t['detected_at_s']:.3f} s by {t['detected_by']}, repaired "
                     + ("-" if t["repaired_at_s"] is None else f"{t['repaired_at_s']:.3f} s"))
            rows.append((f"tampering {t['node']} {t['target']}", f"{t['at_s']:.3f} s: {found}"))
    if summary.get("sim_time_s") is None:  # a real run has no virtual time
        rows.append(("wall time", f"{summary['wall_time_s']} s"))
    else:
        rows.append(("simulated / wall time",
                     f"{summary['sim_time_s']:.3f} s / {summary['wall_time_s']} s"))
    for k, v in rows:
        table.add_row(k, v)
    return table
