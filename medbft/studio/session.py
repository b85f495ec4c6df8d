"""One studio session: a scenario, the what-if actions a person added, and the run they make.

Why this exists: the studio must stay reproducible. Every what-if action (crash or recover a
replica, partition, make a replica Byzantine, slow a link, heal, send a client request) is
recorded as a timed fault
at the current virtual time, in the scenario's own fault format, and the run is then rebuilt
from the seed and advanced back to that time. So the run on screen is always exactly
`run_scenario(scenario with those faults)`: "save as scenario" writes that scenario, and
`medbft run` on the file reproduces the session byte for byte. Going back in time is the same
rebuild, to an earlier time (one seed, one run: the simulator is deterministic).

It also reads what the page shows from the live parts: each replica's position and log slots
(view, watermarks, stable checkpoint, last executed, the phase and quorum counters of its
latest slots) from the replica objects, a little of each replica's ledger (counts only, no
personal data), and the checker's verdicts, so a fork shows the moment two honest replicas
execute different batches at one sequence number.

What it must not know: HTTP (medbft/studio/server.py) or how the page draws.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from medbft.errors import UsageError
from medbft.scenario import BEHAVIORS, Scenario, ScenarioError, parse_scenario, to_dict
from medbft.scenario.model import simulation_problems
from medbft.units import format_duration_ns
from medbft.views.replay import page_meta, step_narration
from sim.stepper import Stepper

__all__ = ["ACTIONS", "PHASE_EVENTS", "Session"]

#: What-if actions the page can ask for, and the fields each takes.
ACTIONS = {
    "crash": ("node",), "recover": ("node",), "byzantine": ("node", "behavior"),
    "partition": ("groups",), "link": ("between", "latency"), "heal": (),
    "request": ("client",),
}
#: Trace events a "next phase" step stops at (the page's PHASE_EVENTS).
PHASE_EVENTS = frozenset({
    "pre-prepare", "prepared", "committed", "execute", "view-change", "join-view", "new-view",
    "enter-view", "checkpoint", "stable", "state-transfer", "crash", "recover", "accept",
    "byzantine-begin", "partition-begin", "heal"})
_STEPS = {"event": lambda row: True, "message": lambda row: row["event"] == "send",
          "phase": lambda row: row["event"] in PHASE_EVENTS}
#: How many of a replica's latest log slots the state panel shows.
SHOWN_SLOTS = 6


class Session:
    """The studio's run of `scenario` (with `seed`, default its own) and its actions."""

    def __init__(self, scenario: Scenario, seed: int | None = None) -> None:
        self.base = to_dict(scenario)
        self.seed = scenario.seed if seed is None else seed
        self.actions: list[dict[str, Any]] = []
        self.gen = 0  # bumped whenever the run is rebuilt: the page then reloads its rows
        self.scenario = scenario
        self.stepper = Stepper(scenario, self.seed)
        ids = [nd.id for nd in scenario.nodes]
        self.meta = page_meta(self.base, scenario.clients)
        self.meta["end_ns"] = scenario.end_ns
        self.roles: dict[str, str] = {nd.id: str(nd.role) for nd in scenario.nodes}
        self.ids = ids
        self._causes_of: Stepper | None = None
        self._cause_rows = 0
        self._cause: dict[str, str] = {}

    # -- the scenario with the actions --------------------------------------------------------

    def scenario_dict(self) -> dict[str, Any]:
        """The scenario (canonical form) with the actions inserted among its faults by time;
        at one instant, the scenario's own faults first, then the actions in order."""
        data = copy.deepcopy(self.base)
        faults = list(data.get("faults") or [])
        for action in self.actions:
            at = action["at_ns"]
            where = sum(1 for f in faults if _at_ns(f) <= at)
            faults.insert(where, {k: v for k, v in action.items() if k != "at_ns"})
        data["faults"] = faults
        return data

    def yaml_text(self) -> str:
        """The session's scenario as a file, in the form a run folder keeps (scenario.yaml)."""
        scenario = parse_scenario(self.scenario_dict(), "<studio>")
        return yaml.safe_dump(to_dict(scenario), sort_keys=False, allow_unicode=True, width=96)

    def save(self, directory: Path) -> Path:
        """Write the session's scenario to DIRECTORY/<name>-studio.yaml; returns the path."""
        path = directory / f"{self.base['name']}-studio.yaml"
        path.write_text(self.yaml_text(), encoding="utf-8")
        return path

    def _rebuild(self, t_ns: int) -> None:
        """A fresh run of the scenario with the actions, advanced to `t_ns`."""
        scenario = parse_scenario(self.scenario_dict(), "<studio>")
        if problems := simulation_problems(scenario):
            raise ScenarioError.from_problems("<studio>", problems)
        self.stepper.close()
        self.scenario = scenario
        self.stepper = Stepper(scenario, self.seed)
        self.stepper.advance_to(t_ns)
        self.gen += 1

    def close(self) -> None:
        """Close the run's loop (the server does when it stops)."""
        self.stepper.close()

    # -- moving in time -----------------------------------------------------------------------

    @property
    def now_ns(self) -> int:
        return self.stepper.now_ns

    def advance_to(self, t_ns: int) -> None:
        self.stepper.advance_to(t_ns)

    def seek(self, t_ns: int) -> None:
        """Go to `t_ns`: forward by running, backwards by replaying from the seed."""
        if t_ns >= self.now_ns:
            self.stepper.advance_to(t_ns)
        else:
            self._rebuild(max(0, t_ns))

    def step(self, what: str) -> None:
        """Run until the next trace row of a kind: event (any), message (a send), phase."""
        if what not in _STEPS:
            raise UsageError(f"step: expected one of {', '.join(_STEPS)}; got {what!r}")
        self.stepper.step(_STEPS[what])

    # -- what-if ------------------------------------------------------------------------------

    def act(self, action: dict[str, Any]) -> dict[str, Any]:
        """Record `action` as a fault at the current virtual time and rebuild the run up to it.
        Raises UsageError (bad action) or ScenarioError (the fault does not validate)."""
        fault = self._fault(action)
        now = self.now_ns
        previous = list(self.actions)
        self.actions.append({"at_ns": now, **fault})
        try:
            self._rebuild(now)
        except ScenarioError:
            self.actions = previous
            raise
        return fault

    def undo(self) -> None:
        """Remove the last action and rebuild the run up to the current time."""
        if not self.actions:
            raise UsageError("undo: no what-if action to remove")
        self.actions.pop()
        self._rebuild(self.now_ns)

    def _fault(self, action: dict[str, Any]) -> dict[str, Any]:
        kind = action.get("kind")
        if kind not in ACTIONS:
            raise UsageError(f"action: kind must be one of {', '.join(ACTIONS)}; got {kind!r}")
        missing = [k for k in ACTIONS[kind] if action.get(k) in (None, "", [])]
        if missing:
            raise UsageError(f"action {kind}: {', '.join(missing)} missing")
        at = format_duration_ns(self.now_ns)
        if kind in ("crash", "recover"):
            return {"at": at, kind: self._node(action["node"])}
        if kind == "byzantine":
            if action["behavior"] not in BEHAVIORS:
                raise UsageError(f"action byzantine: behavior must be one of "
                                 f"{', '.join(BEHAVIORS)}; got {action['behavior']!r}")
            return {"at": at, "byzantine": self._node(action["node"]),
                    "behavior": action["behavior"]}
        if kind == "partition":
            groups = [[self._node(n) for n in group] for group in action["groups"]]
            return {"at": at, "partition": groups}
        if kind == "link":
            a, b = (self._node(n) for n in action["between"])
            return {"at": at, "link": {"between": [a, b], "latency": str(action["latency"])}}
        if kind == "request":
            if action["client"] not in self.scenario.clients:
                raise UsageError(f"action request: unknown client {action['client']!r}; the "
                                 f"clients are {', '.join(self.scenario.clients)}")
            return {"at": at, "request": str(action["client"])}
        return {"at": at, "heal": "all"}

    def _node(self, node: Any) -> str:
        if node not in self.ids:
            raise UsageError(f"action: unknown replica {node!r}; the replicas are "
                             f"{', '.join(self.ids)}")
        return str(node)

    def action_lines(self) -> list[str]:
        """Each action as the fault line the saved scenario holds."""
        return [yaml.safe_dump({k: v for k, v in a.items() if k != "at_ns"},
                               default_flow_style=True, width=200).strip()
                for a in self.actions]

    # -- what the page shows ------------------------------------------------------------------

    def rows(self, since: int) -> list[dict[str, Any]]:
        return [{k: v for k, v in row.items() if k != "bytes"}
                for row in self.stepper.trace[since:]]

    def poll(self, gen: int, since: int) -> dict[str, Any]:
        """What changed since the page's last poll: new rows (all of them when the run was
        rebuilt since: `gen` differs), their narration, and the state now."""
        if gen != self.gen:
            since = 0
        rows = self.rows(since)
        run = self.stepper.run
        verdicts = run.checker.verdicts(run.workload.settled, run.workload.submitted, {})
        return {
            "gen": self.gen, "now_ns": self.now_ns, "end_ns": self.stepper.end_ns,
            "done": self.stepper.done, "rows": rows,
            "narration": step_narration(rows, self.roles),
            "state": self.state(verdicts.violations),
            "honest": sorted(run.checker.honest), "safety_ok": verdicts.safety_ok,
            "violations": verdicts.violations[:5], "actions": self.action_lines(),
        }

    def state(self, violations: list[dict[str, Any]]) -> dict[str, Any]:
        """Each replica as the page's snapshot() has it, read from the replica objects."""
        run = self.stepper.run
        q = self.meta["q"]
        nodes = {}
        for nid in self.ids:
            replica = run.replicas[nid]
            log = replica.log
            slots = []
            for seq in sorted(log.slots, reverse=True)[:SHOWN_SLOTS]:
                slot = log.slots[seq]
                phase = ("executed" if seq <= replica.last_executed else
                         "committed" if slot.committed else "prepared" if slot.prepared else
                         "pre-prepared" if slot.pre_prepared else "")
                slots.append({"seq": seq, "view": slot.view, "digest": slot.digest.hex(),
                              "phase": phase, "prepares": len(slot.prepares),
                              "commits": len(slot.commits)})
            shell = run.faults.shells.get(nid)
            nodes[nid] = {
                "view": replica.view, "active": replica.view_active,
                "crashed": run.runtimes[nid].crashed,
                "byz": shell.behavior["name"] if shell is not None else None,
                "lastExec": replica.last_executed, "stable": replica.h, "low": replica.h,
                "high": log.high, "slots": slots, "cause": self._causes().get(nid),
                "ledger": _ledger_line(run.app, nid),
            }
        forks = [{"seq": v["seq"], "digests": _by_digest(v["digests"])}
                 for v in violations if v.get("kind") == "agreement: different batch at one seq"]
        return {"t": self.now_ns, "nodes": nodes, "forks": forks, "q": q, "derived": False,
                "partitions": [], "links": []}


    def _causes(self) -> dict[str, str]:
        """Each replica's latest view-change cause, from the trace (`cause` of view-change
        rows: request-timer, new-view-timer, f+1-view-changes, byzantine; older code: none)."""
        if self._causes_of is not self.stepper:  # rebuilt: read the new trace from the start
            self._causes_of, self._cause_rows, self._cause = self.stepper, 0, {}
        trace = self.stepper.trace
        for row in trace[self._cause_rows:]:
            if row["event"] in ("view-change", "join-view") and row.get("cause"):
                self._cause[row["node"]] = str(row["cause"])
        self._cause_rows = len(trace)
        return self._cause


def _at_ns(fault: dict[str, Any]) -> int:
    from medbft.units import parse_duration_ns
    return parse_duration_ns(fault["at"])


def _by_digest(digests: dict[str, str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for node, digest in sorted(digests.items()):
        out.setdefault(digest, []).append(node)
    return out


def _ledger_line(app: Any, nid: str) -> str | None:
    """A replica's ledger in a few counts (no personal data): blocks, lots and how many are
    recalled, consents on record and how many are withdrawn."""
    machine = getattr(app, "ledgers", {}).get(nid)
    if machine is None:
        return None
    state = getattr(machine, "ledger", machine).state
    lots = state.tables["lots"]
    consents = state.tables["consents"]
    recalled = sum(1 for row in lots.values() if row[3] is not None)
    withdrawn = sum(1 for row in consents.values() if row[8] is not None)
    return (f"ledger: {len(state.blocks.entries)} blocks · {len(lots)} lots ({recalled} "
            f"recalled) · {len(consents)} consents ({withdrawn} withdrawn)")
