"""The ledger inside whole simulated runs: its invariants (docs/ledger.md#invariants) checked
on every replica after every block (`CheckedLedger`, via medbft.apps.CHECK_INVARIANTS), honest
replicas ending with identical state digests, the four teaching scenarios telling their
stories, and the key-value app still selectable for protocol measurements."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import medbft.apps
from medbft.scenario import ScenarioError, load_scenario, parse_scenario
from sim.run import run_scenario

ROOT = Path(__file__).parent.parent


@pytest.fixture(autouse=True)
def check_invariants(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(medbft.apps, "CHECK_INVARIANTS", True)


def run(path: str, *overrides: str) -> dict[str, Any]:
    summary = run_scenario(load_scenario(ROOT / "scenarios" / path, overrides)).summary
    ledger = summary["ledger"]
    assert ledger["invariants"] == {"violations": [], "digest_forks": []}
    assert ledger["digests_agree"], "honest replicas end with identical state digests"
    assert summary["safety"]["ok"]
    assert summary["expect"] == {"ok": True, "failed": []}, summary["expect"]
    return summary


def test_vaccine_recall_blocks_the_lot_and_lists_the_exposure() -> None:
    ledger = run("vaccine-recall.yaml")["ledger"]
    (recall,) = ledger["story"]["recalls"]
    assert 4.0 <= recall["effective_s"] < 4.1, "effective the moment its block commits"
    assert recall["all_acked_s"] >= recall["effective_s"] and recall["closed_s"]
    assert all(a["on_hand"] == a["ledger_on_hand"] for a in recall["acks"])
    exposure = recall["exposure"]
    assert exposure["recall"]["status"] == "closed"
    assert exposure["patients"], "the lot reached patients: they are on the list"
    assert ledger["txs_by_kind"]["IMMUNIZATION_ADMINISTER"]["ok"] > 0
    assert "role-not-permitted" in ledger["rejections_by_reason"]
    # Personal data is refused at admission: never ordered, so never rejected in a block.
    refused = ledger["refused_at_admission"]
    assert {"phi-field:birthDate", "not-a-code:reason"} & set(refused), refused
    assert not any(r.startswith(("phi-", "not-a-code")) for r in ledger["rejections_by_reason"])


def test_counterfeit_is_caught_flagged_and_notified() -> None:
    ledger = run("counterfeit-injection.yaml")["ledger"]
    story = ledger["story"]["counterfeit"]
    assert story["result"] == "rejected:counterfeit-suspected"
    assert story["forger"] == "pharmacist-1" and story["alerts_on_ledger"] == 1
    assert story["submitted_s"] < story["caught_s"] < story["flagged_s"] < story["notified_s"]
    assert ledger["rejections_by_reason"]["counterfeit-suspected"] == 1


def test_consent_race_is_decided_by_the_agreed_order() -> None:
    races = run("consent-race.yaml")["ledger"]["story"]["races"]
    assert len(races) >= 5
    for race in races:
        expected = "deny" if race["order"] == "revoke-then-access" else "permit"
        assert race["decision"] == expected, race
    assert sum(r["same_block"] for r in races) >= len(races) // 2
    assert {r["order"] for r in races} == {"revoke-then-access", "access-then-revoke"}


def test_regulator_crash_delays_only_regulator_transactions() -> None:
    summary = run("regulator-crash.yaml")
    by_role = summary["ledger"]["latency_ms_by_role"]
    assert by_role["inspector"]["max"] > 2500, "the inspector waited for its node"
    assert all(v["max"] < 200 for role, v in by_role.items() if role != "inspector")
    assert summary["state_transfers"] >= 1
    assert summary["ledger"]["story"]["regulator_only_committed"]["BREAK_GLASS_REVIEW"] > 0


def test_invariants_hold_through_primary_crash_and_loss() -> None:
    summary = run("primary-crash.yaml", "workload.clients=7", "network.loss=0.02",
                  "duration=5s")
    assert summary["view_changes"] >= 1
    # Settled requests: those ordered (each a ledger transaction) and those refused at
    # admission (answered, never ordered).
    refused = sum(summary["ledger"]["refused_at_admission"].values())
    assert summary["ledger"]["transactions"] == summary["requests"]["committed"] - refused


def test_same_seed_same_ledger() -> None:
    sc = load_scenario(ROOT / "scenarios" / "baseline.yaml",
                       ["duration=1s", "workload.clients=7"])
    a, b = run_scenario(sc).summary, run_scenario(sc).summary
    assert a["ledger"]["state_digest"] == b["ledger"]["state_digest"]
    c = run_scenario(sc, seed=2).summary
    assert c["ledger"]["state_digest"] != a["ledger"]["state_digest"]


def test_mix_and_invalid_share_shape_the_traffic() -> None:
    base = {"name": "m", "duration": "2s", "nodes": 4, "network": {"latency": "5ms"},
            "workload": {"population": {"manufacturer": 1, "distributor": 1,
                                        "pharmacist": 1},
                         "mix": {"GTIN_REGISTER": 1, "EPCIS_COMMISSION": 1, "EPCIS_SHIP": 3,
                                 "EPCIS_RECEIVE": 3}, "invalid": 0}}
    ledger = run_scenario(parse_scenario(base)).summary["ledger"]
    assert set(ledger["txs_by_kind"]) == {"GTIN_REGISTER", "EPCIS_COMMISSION", "EPCIS_SHIP",
                                          "EPCIS_RECEIVE"}
    assert ledger["rejections_by_reason"] == {}
    base["workload"]["invalid"] = 0.3
    ledger = run_scenario(parse_scenario(base)).summary["ledger"]
    rejected = sum(ledger["rejections_by_reason"].values())
    assert 0.15 * ledger["transactions"] < rejected < 0.45 * ledger["transactions"]


def test_key_value_app_is_still_selectable() -> None:
    sc = parse_scenario({"name": "kv", "duration": "1s", "nodes": 4,
                         "network": {"latency": "10ms"},
                         "workload": {"app": "kv", "clients": 2}})
    summary = run_scenario(sc).summary
    assert "ledger" not in summary and summary["latency_ms"]["max"] == 50.0
    with pytest.raises(ScenarioError, match="only for app: ledger"):
        parse_scenario({"name": "kv", "duration": "1s", "nodes": 4,
                        "workload": {"app": "kv", "flow": "mixed"}})


def test_population_names_clients_and_checks_its_fields() -> None:
    sc = parse_scenario({"name": "p", "duration": "1s", "nodes": 4,
                         "workload": {"population": {"patient": 2, "inspector": 1}}})
    assert sc.clients == ("patient-1", "patient-2", "inspector-1")
    assert sc.client_roles["inspector-1"] == "inspector"
    for bad, field in (({"population": {"pirate": 1}}, "workload.population"),
                       ({"population": {"patient": 2}, "clients": 3}, "workload.clients"),
                       ({"mix": {"EPCIS_SHIPP": 1}}, "workload.mix"),
                       ({"flow": "chaos"}, "workload.flow")):
        with pytest.raises(ScenarioError) as info:
            parse_scenario({"name": "p", "duration": "1s", "nodes": 4, "workload": bad})
        assert field in [p.field for p in info.value.problems], str(info.value)


@pytest.mark.parametrize("path", ["tamper-audit.yaml", "restart-under-load.yaml"])
def test_replayed_blocks_change_nothing_in_a_run(path: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The replicas of a run replay the blocks one of them executed (node.ledger.ledger.
    Executions); with every replay refused, so that each replica computes every block, the
    run is the same to the byte: the summary and every replica's state digest, including
    the tampered replica's and the restarted one's, which compute their own blocks while
    their state differs."""
    from node.ledger import Executions
    from sim.run import digest_summary

    sc = load_scenario(ROOT / "scenarios" / path)
    made: list[Executions] = []
    real_init = Executions.__init__

    def counted(self: Executions, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(Executions, "__init__", counted)
    shared = run_scenario(sc)
    assert made and made[0].hits > made[0].misses > 0
    monkeypatch.setattr(Executions, "get", lambda self, key: None)
    alone = run_scenario(sc)
    assert digest_summary(shared.summary) == digest_summary(alone.summary)
    assert shared.summary["ledger"] == alone.summary["ledger"]
    # every replica's height and state digest, and the saved ledger whole
    assert shared.ledger is not None and alone.ledger is not None
    assert shared.ledger["digests"] == alone.ledger["digests"]
    assert shared.ledger["ledger"].snapshot() == alone.ledger["ledger"].snapshot()
