"""Layer 3: whole simulated runs from scenario files, checked against the expected numbers of
docs/design.md#expected-numbers and the shipped scenarios' own `expect:` blocks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from medbft.scenario import load_scenario, parse_scenario
from sim.run import run_scenario

SCENARIOS = sorted(Path(__file__).parent.parent.joinpath("scenarios").glob("*.yaml"))
SLOW_SCENARIOS = {"restart-under-load", "seven-nodes", "vaccine-recall", "insurance-claim",
                  "research-study", "cold-chain-excursion", "censored-recall",
                  "sixty-four-nodes"}  # > 2 s each
MS = 1_000_000


def scenario(**over: Any) -> Any:
    base: dict[str, Any] = {
        "name": "t", "seed": 1, "duration": "2s", "nodes": 4,
        "network": {"latency": "10ms"}, "cpu": "none",
        "workload": {"clients": 1, "outstanding": 1},
        "protocol": {"checkpoint_interval": 16, "watermark_window": 32},
    }
    for key, value in over.items():
        base[key] = value
    return parse_scenario(base, "<test>")


@pytest.mark.parametrize("path", [
    pytest.param(p, id=p.stem, marks=[pytest.mark.slow] if p.stem in SLOW_SCENARIOS else [])
    for p in SCENARIOS])
def test_shipped_scenario_meets_its_expectations(path: Path) -> None:
    sc = load_scenario(path)
    assert sc.description.strip(), "every shipped scenario teaches something"
    assert sc.expect.safety is not None, "every shipped scenario says what safety should do"
    summary = run_scenario(sc).summary
    assert summary["expect"] == {"ok": True, "failed": []}, summary["expect"]
    assert summary["safety"]["ok"] is sc.expect.safety


@pytest.mark.parametrize("n", [4, 5, 7, 10])
def test_latency_is_exactly_five_one_way_delays(n: int) -> None:
    # No invalid share: a request refused at admission is answered without ordering (faster).
    summary = run_scenario(scenario(nodes=n, workload={"clients": 1, "outstanding": 1,
                                                       "invalid": 0})).summary
    assert summary["requests"]["committed"] > 10
    lat = summary["latency_ms"]
    assert lat["p50"] == lat["max"] == lat["mean"] == 50.0


@pytest.mark.parametrize("n", [4, 7, 10])
def test_messages_per_request_by_type_match_the_expected_numbers(n: int) -> None:
    # No checkpoint within the run, so the counts are exactly the per-request formulas.
    sc = scenario(nodes=n, protocol={"checkpoint_interval": 1000, "watermark_window": 2000})
    summary = run_scenario(sc).summary
    k = summary["requests"]["committed"]
    assert k == summary["requests"]["submitted"] > 10
    assert summary["messages"]["by_type"] == {
        "REQUEST": k, "PRE-PREPARE": k * (n - 1), "PREPARE": k * (n - 1) ** 2,
        "COMMIT": k * n * (n - 1), "REPLY": k * n,
    }
    assert summary["messages"]["total"] == k * (2 * n * n - n + 1)


def test_checkpoint_traffic_is_n_times_n_minus_1_per_interval() -> None:
    summary = run_scenario(scenario(protocol={"checkpoint_interval": 8,
                                              "watermark_window": 16})).summary
    k = summary["requests"]["committed"]
    assert summary["messages"]["by_type"]["CHECKPOINT"] == (k // 8) * 4 * 3
    assert summary["stable_checkpoint"] == (k // 8) * 8


def test_primary_crash_commits_everything_after_one_view_change() -> None:
    summary = run_scenario(load_scenario("scenarios/primary-crash.yaml")).summary
    assert summary["view_changes"] == 1 and summary["final_view"] == 1
    assert summary["requests"]["committed"] == summary["requests"]["submitted"]
    assert summary["safety"]["ok"] and summary["liveness"]["ok"]
    # stall ~ T_client + T_view_change + 6 one-way delays (docs/design.md#view-change-stall)
    assert 1500 <= summary["latency_ms"]["max"] <= 1500 + 8 * 10
    assert summary["state_transfers"] >= 1, "the restarted primary caught up"


def test_f_plus_1_crashed_ends_on_time_commits_nothing_more_safety_held() -> None:
    sc = load_scenario("scenarios/f-plus-one-crashed.yaml")
    result = run_scenario(sc)
    s = result.summary
    assert s["sim_time_s"] == pytest.approx(sc.end_ns / 1e9)
    commits = [r.commit_ns for r in result.requests if r.commit_ns is not None]
    crash_at = min(f.at_ns for f in sc.faults)
    assert commits and max(commits) <= crash_at + 50 * MS
    assert s["safety"]["ok"] and not s["liveness"]["ok"]
    assert s["liveness"]["unsettled"] == 1


@pytest.mark.slow
def test_batching_reduces_messages_per_request_and_lifts_cpu_bound_throughput() -> None:
    # With the CPU model on, 200 requests in flight over 1 ms links saturate the primary's CPU
    # at b = 1 (docs/design.md#per-node-load: X_max ~ b / ((2b + 4(n-1)) c_m)).
    def run(batch: int) -> dict[str, Any]:
        return run_scenario(scenario(
            cpu="default", duration="500ms", network={"latency": "1ms"},
            workload={"clients": 10, "outstanding": 20},
            protocol={"batch_size": batch, "batch_timeout": "1ms", "checkpoint_interval": 64,
                      "watermark_window": 128}),
        ).summary

    one, many = run(1), run(16)
    assert max(one["cpu"]["utilisation"].values()) > 0.8
    assert many["messages"]["per_committed_request"] < one["messages"]["per_committed_request"]
    assert many["throughput_tps"] > one["throughput_tps"]


def test_open_loop_poisson_rate_is_offered() -> None:
    s = run_scenario(scenario(duration="5s", workload={"clients": 2, "rate": "100/s"})).summary
    assert 400 <= s["requests"]["submitted"] <= 600
    assert s["liveness"]["ok"]


def test_cpu_model_adds_processing_time() -> None:
    free = run_scenario(scenario()).summary["latency_ms"]["p50"]
    costly = run_scenario(scenario(cpu="default")).summary
    assert costly["latency_ms"]["p50"] > free
    util = costly["cpu"]["utilisation"]
    assert all(0 < u < 1 for u in util.values())


def test_lossy_network_still_commits_everything() -> None:
    s = run_scenario(scenario(duration="5s", network={"latency": "10ms", "loss": 0.05},
                              protocol={"client_timeout": "300ms",
                                        "view_change_timeout": "500ms",
                                        "checkpoint_interval": 16,
                                        "watermark_window": 32})).summary
    assert s["messages"]["lost"] > 0
    assert s["safety"]["ok"] and s["liveness"]["ok"]


def test_client_links_use_the_default_latency_unless_overridden() -> None:
    sc = scenario(network={"latency": "10ms",
                           "links": [{"between": ["client-1", "hospital-1"],
                                      "latency": "30ms"}]})
    s = run_scenario(sc).summary
    # request 30 ms, pre-prepare/prepare/commit 10 ms each, f+1 = 2nd fastest reply 10 ms
    assert s["latency_ms"]["p50"] == 70.0


@pytest.mark.parametrize("promoted", [False, True], ids=["short", "long"])
def test_runs_one_after_another_do_not_pile_up_in_memory(promoted: bool) -> None:
    """A finished run's replicas, ledgers and loop refer to each other (cyclic garbage that
    only a collection frees). The next run collects them first, so a process running
    scenarios one after another (a sweep's or the fuzzer's workers) holds at most the last
    run's: counted here as Replica objects the collector still tracks. `long`: a collection
    during each run moved its objects to the oldest generation, as in a long run, so only
    a full collection finds them."""
    import gc

    from node.pbft.replica import Replica

    def replicas() -> int:
        return sum(1 for o in gc.get_objects() if type(o) is Replica)

    def collect_once(*_: Any) -> None:
        if not done:
            done.append(gc.collect(1))  # promotes, but never walks the oldest generation

    sc = scenario(duration="300ms")
    gc.collect()
    before = replicas()
    for _ in range(4):
        done: list[int] = []
        result = run_scenario(sc, progress=collect_once if promoted else None)
        assert result.summary["safety"]["ok"] and bool(done) == promoted
        del result
    # The last run's 4 replicas may wait for the next run; none of the three before it.
    assert replicas() - before <= sc.n
