"""An identity the ledger traffic never has a transaction for is not asked again.

Why this exists: a closed-loop session with nothing to submit asks the traffic again every
IDLE_RETRY_NS for the whole run. An auditor never has anything (it reads the ledger and acts
only in scripted stories), so at n = 4 its four sessions made 800 asks per 2 simulated
seconds, against 1,111 requests. `LedgerTraffic.never_acts` names such identities and the
workload stops asking them. This checks, for every flow, that the claim holds (asked all the
same, the auditor never gets a transaction) and that stopping changes no result: the same
summary to the byte. It also needs the traffic to note a result's time when the result comes
(`on_result(..., now_ns)`), not at the last ask, which the auditor's asks used to refresh.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import medbft.traffic.ledger as traffic_ledger
from medbft.scenario import load_scenario, parse_scenario
from medbft.traffic.ledger import FLOWS, NEVER_ACTING_ROLES
from sim.run import digest_summary, run_scenario

ROOT = Path(__file__).resolve().parent.parent


def _spec(flow: str) -> dict[str, Any]:
    return {"name": f"idle-{flow}", "seed": 3, "duration": "1s", "nodes": 4,
            "network": {"latency": "5ms"},
            "workload": {"clients": 6, "outstanding": 2, "flow": flow,
                         "population": {"manufacturer": 1, "distributor": 1, "pharmacist": 1,
                                        "clinician": 1, "patient": 1, "auditor": 1}}}


@pytest.mark.parametrize("flow", sorted(FLOWS))
def test_an_auditor_never_gets_a_transaction_and_not_asking_it_changes_nothing(
        flow: str, monkeypatch: pytest.MonkeyPatch) -> None:
    scenario = parse_scenario(_spec(flow), "tests/test_traffic_idle.py")
    quiet = run_scenario(scenario).summary
    given: list[bytes | None] = []
    next_op = traffic_ledger.LedgerTraffic.next_op

    def watched(self: Any, cid: str, session: int, now_ns: int) -> bytes | None:
        op = next_op(self, cid, session, now_ns)
        party = self.g.parties.get(cid)
        if party is not None and party.role in NEVER_ACTING_ROLES:
            given.append(op)
        return op

    monkeypatch.setattr(traffic_ledger.LedgerTraffic, "next_op", watched)
    monkeypatch.setattr(traffic_ledger.LedgerTraffic, "never_acts", lambda self, cid: False)
    asking = run_scenario(scenario).summary
    assert len(given) > 50 and set(given) == {None}
    assert quiet["requests"]["committed"] > 0
    assert digest_summary(quiet) == digest_summary(asking)


def test_a_shipped_scenario_with_a_recall_story_is_the_same_either_way(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """censored-recall: its recall's commit and close times come from the traffic's clock,
    which now reads the time each result came."""
    scenario = load_scenario(ROOT / "scenarios" / "censored-recall.yaml")
    quiet = run_scenario(scenario).summary
    monkeypatch.setattr(traffic_ledger.LedgerTraffic, "never_acts", lambda self, cid: False)
    asking = run_scenario(scenario).summary
    assert quiet["ledger"]["story"]["recalls"] == asking["ledger"]["story"]["recalls"]
    assert digest_summary(quiet) == digest_summary(asking)
