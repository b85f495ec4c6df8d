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
latest slots) from the replica objects, the part of each replica's ledger that matters to the
story (lot statuses, one patient's consents: ids and pseudonyms only, the ledger holds no
personal data; bounded, see `ledger_view`), and the checker's verdicts, so a fork shows the
moment two honest replicas execute different batches at one sequence number.

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
from node.ledger.queries import active_consents
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
#: How many lots, consents and patient pseudonyms the ledger panel lists (then "+N more").
SHOWN_LOTS = SHOWN_CONSENTS = 20
SHOWN_PATIENTS = 50


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

    def poll(self, gen: int, since: int, patient: str | None = None) -> dict[str, Any]:
        """What changed since the page's last poll: new rows (all of them when the run was
        rebuilt since: `gen` differs), their narration, and the state now (the ledger panel
        shows the consents of `patient`, a pseudonym; by default the latest one changed)."""
        if patient is not None and not isinstance(patient, str):
            raise UsageError(f"patient: expected a pseudonym such as 'pp:...'; got {patient!r}")
        if gen != self.gen:
            since = 0
        rows = self.rows(since)
        run = self.stepper.run
        verdicts = run.checker.verdicts(run.workload.settled, run.workload.submitted, {})
        return {
            "gen": self.gen, "now_ns": self.now_ns, "end_ns": self.stepper.end_ns,
            "done": self.stepper.done, "rows": rows,
            "narration": step_narration(rows, self.roles),
            "state": self.state(verdicts.violations, patient),
            "honest": sorted(run.checker.honest), "safety_ok": verdicts.safety_ok,
            "violations": verdicts.violations[:5], "actions": self.action_lines(),
        }

    def state(self, violations: list[dict[str, Any]], patient: str | None = None
              ) -> dict[str, Any]:
        """Each replica as the page's snapshot() has it, read from the replica objects."""
        run = self.stepper.run
        q = self.meta["q"]
        ledgers = {nid: _ledger_of(run.app, nid) for nid in self.ids}
        patients, patient = _patients(ledgers, patient)
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
                "book": ledger_view(ledgers[nid], patient),
            }
        forks = [{"seq": v["seq"], "digests": _by_digest(v["digests"])}
                 for v in violations if v.get("kind") == "agreement: different batch at one seq"]
        out = {"t": self.now_ns, "nodes": nodes, "forks": forks, "q": q, "derived": False,
               "partitions": [], "links": []}
        if any(ledger is not None for ledger in ledgers.values()):
            out["patients"], out["patient"] = patients, patient
        return out


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
    ledger = _ledger_of(app, nid)
    if ledger is None:
        return None
    state = ledger.state
    lots = state.tables["lots"]
    consents = state.tables["consents"]
    recalled = sum(1 for row in lots.values() if row[3] is not None)
    withdrawn = sum(1 for row in consents.values() if row[8] is not None)
    return (f"ledger: {len(state.blocks.entries)} blocks · {len(lots)} lots ({recalled} "
            f"recalled) · {len(consents)} consents ({withdrawn} withdrawn)")


def _ledger_of(app: Any, nid: str) -> Any:
    """A replica's ledger (node.ledger.ledger.Ledger), or None in a run without one (kv)."""
    machine = getattr(app, "ledgers", {}).get(nid)
    return None if machine is None else getattr(machine, "ledger", machine)


def _patients(ledgers: dict[str, Any], wanted: str | None) -> tuple[list[str], str | None]:
    """The pseudonyms with a consent on any replica (sorted, at most SHOWN_PATIENTS, `wanted`
    kept), and the one to show: `wanted` if some replica knows it, else the pseudonym whose
    consent was granted or revoked last (the latest block position on any replica)."""
    latest: dict[str, tuple[int, int]] = {}
    for ledger in ledgers.values():
        if ledger is None:
            continue
        for row in ledger.state.tables["consents"].values():
            moved = max(tuple(row[7]), tuple(row[8] or (0, 0)))
            if moved > latest.get(row[0], (-1, -1)):
                latest[row[0]] = moved
    if wanted not in latest:
        wanted = max(latest, key=lambda p: (latest[p], p)) if latest else None
    shown = sorted(latest)[:SHOWN_PATIENTS]
    if wanted is not None and wanted not in shown:
        shown = sorted([*shown[:-1], wanted])
    return shown, wanted


def ledger_view(ledger: Any, patient: str | None) -> dict[str, Any] | None:
    """What the ledger panel shows of one replica's ledger (None without a ledger):

    - `lots`: each lot's id and status as the ledger records it: `recalled` (with the recall
      id; the rule that blocks its units), `quarantined` (a cold-chain excursion or a flag
      on the whole lot) or `active`; the recalled and quarantined first, then the newest
      (latest first event of its units), at most SHOWN_LOTS, `lots_more` the rest;
    - `consents`: the consents of pseudonym `patient`, newest grant first, at most
      SHOWN_CONSENTS (`consents_more` the rest): id, grantee, actions, purposes and status,
      `in force` (node.ledger.queries.active_consents at the last block), `revoked` (with
      the block it was revoked in) or `outside its period`.

    Ids and pseudonyms only: the ledger holds no personal data."""
    if ledger is None:
        return None
    st = ledger.state
    suspects = st.tables["suspects"]
    lots = []
    for lot, row in st.tables["lots"].items():
        status = ("recalled" if row[3] else
                  "quarantined" if "lot:" + lot in suspects else "active")
        first = min((st.trace_idx[epc][0] for epc in st.lot_units.get(lot, ())
                     if st.trace_idx.get(epc)), default=-1)
        lots.append((status == "active", -first, lot, status, row[3]))
    lots.sort()
    consents = []
    if patient is not None:
        live = {c["consent_id"] for c in active_consents(ledger, patient)}
        for cid, row in st.tables["consents"].items():
            if row[0] != patient:
                continue
            status = ("revoked" if row[8] is not None else
                      "in force" if cid in live else "outside its period")
            consents.append((tuple(row[7]), cid, row, status))
        consents.sort(reverse=True)
    return {
        "blocks": len(st.blocks.entries),
        "lots": [{"lot": lot, "status": status, "recall": recall}
                 for _, _, lot, status, recall in lots[:SHOWN_LOTS]],
        "lots_more": max(0, len(lots) - SHOWN_LOTS),
        "patient": patient,
        "consents": [{"consent_id": cid, "grantee": row[1], "actions": list(row[2]),
                      "purposes": list(row[3]), "status": status,
                      "granted_height": row[7][0],
                      "revoked_height": None if row[8] is None else row[8][0]}
                     for _, cid, row, status in consents[:SHOWN_CONSENTS]],
        "consents_more": max(0, len(consents) - SHOWN_CONSENTS),
    }
