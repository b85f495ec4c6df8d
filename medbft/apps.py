"""The application side of a simulated run: which state machine the replicas execute, what
the clients submit, and what the run reports and saves about the ledger.

Why this exists: sim/run.py assembles protocol parts and should not grow ledger knowledge.
`make_app(scenario, membership, seed)` returns a `LedgerApp` (the default, `workload.app:
ledger`) or a `KvApp` (`app: kv`, tiny `put k v` ops for protocol measurements); run.py asks
it for each replica's state machine, the workload's op source and gateway rule, the
`ledger` section of summary.json, and the files to save (`ledger.json`: the final ledger of
one honest replica with its genesis; `ledger_digests.json`: every replica's final state
digest; `offchain.json`: the EPCIS/FHIR documents behind the commitments).

Tests set `CHECK_INVARIANTS = True` to wrap every replica's ledger in `CheckedLedger`
(docs/ledger.md#invariants after every block) and get the violations in the summary.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from medbft.harm import (
    JUDGED_EVENTS,
    ObservedTraffic,
    RequestArrivals,
    build_history,
    empty_harm,
    judge_harm,
    tamper_ledger,
)
from medbft.metrics import latency_stats
from medbft.traffic import LedgerTraffic
from node.apps import STATE_MACHINES, make_state_machine
from node.ledger import (
    CheckedLedger,
    Executions,
    Ledger,
    LedgerGenesis,
    cases,
    claims,
    excursions,
    recall_exposure,
    save_ledger,
    studies,
)
from node.membership import Membership
from node.statemachine import StateMachine

__all__ = ["CHECK_INVARIANTS", "KvApp", "LedgerApp", "make_app", "write_ledger_results"]

CHECK_INVARIANTS = False
OFFCHAIN_FILE = "offchain.json"
REGULATOR_ONLY = ("BREAK_GLASS_REVIEW", "RECALL_CLOSE", "NOTIFICATION_TERMINATE",
                  "SUSPECT_CLEAR", "ORG_SUSPEND", "ORG_REINSTATE")


class KvApp:
    """The key-value placeholder: replicas run `KeyValueStore`, clients submit `put k v`."""

    traffic = None

    def __init__(self, scenario: Any, membership: Membership, seed: int) -> None:
        self.membership = membership

    def state_machine(self, node_id: str) -> StateMachine:
        return make_state_machine("kv", self.membership)

    def gateway(self, runtimes: dict[str, Any]) -> None:
        return None

    def summarise(self, run: Any) -> dict[str, Any] | None:
        return None

    def harm(self, run: Any) -> dict[str, Any]:
        """A key-value store has no domain harms (medbft/harm.py)."""
        return empty_harm()

    def request_watch(self) -> None:
        return None

    def tamper(self, node_id: str, target: str) -> str:
        raise ValueError("tampering needs workload.app: ledger")  # refused by the schema

    def artifacts(self, run: Any) -> None:
        return None


class LedgerApp:
    """The healthcare ledger on every replica, and realistic traffic from the population."""

    def __init__(self, scenario: Any, membership: Membership, seed: int) -> None:
        w = scenario.workload
        self.scenario = scenario
        self.genesis = LedgerGenesis.from_membership(membership)
        # What each client submitted and accepted is noted for the harm judge (medbft/harm.py).
        self.traffic = ObservedTraffic(LedgerTraffic(
            self.genesis, random.Random(f"medbft:{seed}:ledger"), flow=w.flow, mix=w.mix,
            invalid=w.invalid, event_at_ns=w.event_at_ns, duration_ns=scenario.duration_ns,
            recall_news=w.recall_news))
        self.arrivals = RequestArrivals(scenario.node_ids)
        self.ledgers: dict[str, Any] = {}
        # One block's rules run once for all replicas: the others replay its writes
        # (node.ledger.ledger.Executions).
        self.executions = Executions()
        self.registry: dict[int, dict[str, str]] = {}
        self.home_gateway = w.home_gateway or w.flow == "regulator-crash"

    def state_machine(self, node_id: str) -> Any:
        # node.apps.healthcare_ledger, with the genesis the traffic also reads (built once)
        ledger = Ledger(self.genesis, self.executions)
        machine: Any = (CheckedLedger(ledger, node_id, self.registry) if CHECK_INVARIANTS
                        else ledger)
        self.ledgers[node_id] = machine
        return machine

    def gateway(self, runtimes: dict[str, Any]) -> Any:
        """With a home gateway, a client submits only while its organisation's node is up."""
        if not self.home_gateway:
            return None
        parties = self.genesis.parties

        def may_submit(cid: str) -> bool:
            org = parties[cid].org if cid in parties else ""
            rt = runtimes.get(org)
            return rt is None or not rt.crashed

        return may_submit

    def request_watch(self) -> RequestArrivals:
        """Told of every REQUEST the simulator sends (when it reaches which replica)."""
        return self.arrivals

    def tamper(self, node_id: str, target: str) -> str:
        """Alter `node_id`'s stored ledger (`audit`, `blocks` or `state`); what was done."""
        return tamper_ledger(self._ledger(node_id), target)

    # -- results ------------------------------------------------------------------------------

    def harm(self, run: Any) -> dict[str, Any]:
        """The run's `harm` section (medbft/harm.py)."""
        events = run.events  # a sim.events.EventLog
        history = build_history(self.genesis, self.traffic, run.workload.records, events,
                                set(run.checker.honest), run.scenario.node_ids, self.arrivals,
                                self.executions)
        out = judge_harm(history, events.select(JUDGED_EVENTS), run.loop.now_ns)
        digests = self.digests(run)
        agreed = {(d["height"], d["digest"]) for d in digests.values() if d["honest"]}
        for entry in out["tampering"]:
            mine = digests[entry["node"]]
            entry["final_state_agrees"] = (mine["height"], mine["digest"]) in agreed
        return out

    def _ledger(self, node_id: str) -> Ledger:
        machine = self.ledgers[node_id]
        return machine.ledger if isinstance(machine, CheckedLedger) else machine

    def _chosen(self, run: Any) -> str:
        """The honest replica with the longest chain (ties: node order)."""
        honest = getattr(run.checker, "honest", set(self.ledgers))
        order = [nid for nid in run.scenario.node_ids if nid in honest] or list(self.ledgers)
        return max(order, key=lambda nid: (len(self._ledger(nid).state.block_hashes),
                                           -order.index(nid)))

    def digests(self, run: Any) -> dict[str, dict[str, Any]]:
        honest = getattr(run.checker, "honest", set(self.ledgers))
        return {nid: {"height": len(self._ledger(nid).state.block_hashes),
                      "digest": self._ledger(nid).state_digest().hex(), "honest": nid in honest}
                for nid in run.scenario.node_ids}

    def summarise(self, run: Any) -> dict[str, Any]:
        chosen = self._chosen(run)
        ledger = self._ledger(chosen)
        st = ledger.state
        digests = self.digests(run)
        top = max(d["height"] for d in digests.values())
        at_top = {d["digest"] for d in digests.values() if d["honest"] and d["height"] == top}
        counts = ledger.summary()
        del counts["head"]
        out: dict[str, Any] = {
            "flow": self.scenario.workload.flow,
            "replica": chosen,
            **counts,
            # Refused at admission: never ordered, so in no block (rejections_by_reason
            # counts only transactions that were ordered and rejected at execution).
            "refused_at_admission": dict(sorted(self.traffic.refused.items())),
            "units": len(st.tables["units"]),
            "state_digest": ledger.state_digest().hex(),
            "digests_agree": len(at_top) == 1,
            "latency_ms_by_role": self._latency_by_role(run),
            "story": self._story(run, ledger),
        }
        if CHECK_INVARIANTS:
            violations = [v for m in self.ledgers.values() for v in m.violations]
            forks = [h for h, by in sorted(self.registry.items()) if len(set(by.values())) > 1]
            out["invariants"] = {"violations": violations[:50], "digest_forks": forks[:50]}
        return out

    def _latency_by_role(self, run: Any) -> dict[str, Any]:
        roles = {p.id: p.role for p in self.genesis.parties.values()}
        by: dict[str, list[int]] = {}
        for r in run.workload.records.values():
            if r.latency_ns is not None:
                by.setdefault(roles.get(r.client, "?"), []).append(r.latency_ns)
        return {role: latency_stats(values) for role, values in sorted(by.items())}

    def _story(self, run: Any, ledger: Ledger) -> dict[str, Any]:
        story = json.loads(json.dumps(self.traffic.story))
        st = ledger.state
        for entry in story.get("recalls", []):
            self._recall_story(ledger, entry)
        for race in story.get("races", []):
            self._race_story(ledger, race)
        if "counterfeit" in story:
            story["counterfeit"]["alerts_on_ledger"] = sum(
                1 for v in st.tables["incidents"].values() if v[5] == "alert")
        self._partner_story(ledger, story)
        regulator = {k: st.stats["ok"].get(k, 0) for k in REGULATOR_ONLY
                     if st.stats["ok"].get(k)}
        if regulator:
            story["regulator_only_committed"] = regulator
        return story

    @staticmethod
    def _partner_story(ledger: Ledger, story: dict[str, Any]) -> None:
        """What the ledger shows of issue 16's stories (only when the flow told one)."""
        st = ledger.state
        if "claim" in story:
            every = claims(ledger)
            by_status: dict[str, int] = {}
            for c in every:
                by_status[c["status"]] = by_status.get(c["status"], 0) + 1
            story["claim"]["claims_on_ledger"] = dict(sorted(by_status.items()))
            story["claim"]["paid_without_consent"] = sum(
                1 for c in every if c["status"] == "approved"
                and not c["consent_in_force_at_payment"])
        if "research" in story:
            answers = [a for s in studies(ledger) for a in s["answers"]]
            story["research"]["answers_on_ledger"] = {
                "released": sum(a["released"] for a in answers),
                "suppressed": sum(not a["released"] for a in answers),
                "released_below_minimum": sum(a["released"] and a["cohort"] < a["min_cohort"]
                                              for a in answers)}
        if "cold_chain" in story:
            lot = story["cold_chain"]["lot"]
            story["cold_chain"].update(
                excursions=excursions(ledger, lot),
                moves_refused_quarantined=st.stats["reasons"].get("quarantined", 0),
                cases_packed=len(cases(ledger)),
                signal_reviews={k: v[4] for k, v in sorted(st.tables["signals"].items())})

    def _recall_story(self, ledger: Ledger, entry: dict[str, Any]) -> None:
        st = ledger.state
        row = st.get("recalls", entry["recall_id"])
        if row is None:
            return
        blocks = st.blocks.entries
        issued_s = blocks[row[4][0] - 1][2] / 1e9
        entry["effective_s"] = issued_s
        acks = sorted((v[3], k.split("|")[1], v[1], v[2]) for k, v in st.tables["acks"].items()
                      if k.startswith(entry["recall_id"] + "|"))
        entry["acks"] = [{"org": org, "on_hand": n, "ledger_on_hand": m,
                          "at_s": blocks[pos[0] - 1][2] / 1e9} for pos, org, n, m in acks]
        if acks:
            entry["all_acked_s"] = entry["acks"][-1]["at_s"]
        entry["rejected_moves_after_recall"] = st.stats["reasons"].get("recalled", 0)
        entry["exposure"] = recall_exposure(ledger, entry["lot"])

    def _race_story(self, ledger: Ledger, race: dict[str, Any]) -> None:
        st = ledger.state
        row = st.get("consents", race["consent_id"])
        if row is None or row[8] is None:
            race["outcome"] = "not-run"
            return
        revoke = tuple(row[8])
        entries = [st.audit.entries[n] for n in st.audit_of_actor.get(race["requester"], ())]
        access = [(e[0], e[1], e[5], e[6]) for e in entries
                  if e[4] == race["patient"] and (e[0], e[1]) > tuple(row[7])]
        if not access:
            race["outcome"] = "access-not-run"
            return
        height, index, decision, rule = access[0]
        race.update(revoke_at=list(revoke), access_at=[height, index],
                    same_block=revoke[0] == height,
                    order="access-then-revoke" if (height, index) < revoke
                    else "revoke-then-access",
                    decision=decision, rule=rule)

    def artifacts(self, run: Any) -> dict[str, Any]:
        return {"ledger": self._ledger(self._chosen(run)), "digests": self.digests(run),
                "offchain": self.traffic.offchain}


#: The run side of each state machine in node/apps.py's list (the one list of them).
RUN_APPS: dict[str, type[LedgerApp] | type[KvApp]] = {"ledger": LedgerApp, "kv": KvApp}
assert set(RUN_APPS) == set(STATE_MACHINES), "every state machine needs its run side"


def make_app(scenario: Any, membership: Membership, seed: int) -> LedgerApp | KvApp:
    """The run side of the scenario's `workload.app`."""
    return RUN_APPS[scenario.workload.app](scenario, membership, seed)


def write_ledger_results(out: str | Path, result: Any) -> None:
    """Save the ledger files of a run into its results directory (nothing for app: kv)."""
    artifacts = getattr(result, "ledger", None)
    if not artifacts:
        return
    out = Path(out)
    save_ledger(out, artifacts["ledger"], artifacts["digests"])
    (out / OFFCHAIN_FILE).write_text(json.dumps(artifacts["offchain"], sort_keys=True,
                                                separators=(",", ":")) + "\n")


def verify_results(directory: str | Path) -> dict[str, Any]:
    """Check a run's saved ledger: chain integrity (recomputed), the saved ledger's digest
    against the replicas' digests, and every saved off-chain document against the chain."""
    from node.ledger import (
        commitment,
        epcis_event_hash,
        load_ledger,
        verify_chain,
        verify_record,
    )
    from node.ledger.queries import DIGESTS_FILE

    path = Path(directory)
    ledger = load_ledger(path)
    chain = verify_chain(ledger)
    saved = json.loads((path / DIGESTS_FILE).read_text())
    height = len(ledger.state.block_hashes)
    at = {nid: d for nid, d in saved.items() if d.get("honest", True) and d["height"] == height}
    digests = {"height": height, "replicas": sorted(at),
               "agree": len({d["digest"] for d in at.values()}) == 1,
               "saved_matches": ledger.state_digest().hex()
               in {d["digest"] for d in at.values()}}
    offchain = {"records_ok": 0, "records_superseded": 0, "records_not_anchored": 0,
                "records_mismatch": 0, "events_ok": 0, "events_on_chain": 0, "events_bad": 0}
    docs_path = path / OFFCHAIN_FILE
    docs = json.loads(docs_path.read_text()) if docs_path.exists() else {}
    for key, item in sorted(docs.get("records", {}).items()):
        salt = bytes.fromhex(item["salt"])
        consent = ledger.state.get("consents", key)
        if consent is not None:  # a FHIR Consent: its commitment sits in the CONSENT_GRANT
            reason = "ok" if commitment(item["resource"], salt) == consent[9] else "mismatch"
        else:
            check = verify_record(ledger, key.split("@")[0], item["resource"], salt)
            reason = "ok" if check["ok"] else check["reason"]
        name = {"ok": "records_ok", "superseded": "records_superseded",
                "unknown-record": "records_not_anchored"}.get(reason, "records_mismatch")
        offchain[name] += 1
    on_chain = {e[6] for e in ledger.state.events.entries}
    for value, event in sorted(docs.get("events", {}).items()):
        ok = epcis_event_hash(event) == value
        offchain["events_ok" if ok else "events_bad"] += 1
        offchain["events_on_chain"] += ok and value in on_chain
    ok = (chain["ok"] and digests["agree"] and digests["saved_matches"]
          and not offchain["records_mismatch"] and not offchain["events_bad"])
    return {"ok": ok, "chain": chain, "digests": digests, "offchain": offchain}
