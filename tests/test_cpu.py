"""sim/cpu.py: the per-node CPU model. Each operation a core counted costs its per-operation
price; `cpu: none` charges nothing; a busy CPU delays what comes after (checked end to end in
short simulated runs; the queue itself is tested in tests/test_runtime.py)."""

from __future__ import annotations

import random
import statistics
from typing import Any

import pytest

from medbft.scenario import parse_scenario
from node.crypto import Costs
from sim.cpu import DEFAULT_COSTS_NS, CpuCosts, client_cost_model, cost_model
from sim.run import RunResult, run_scenario

ZERO = (0, 0, 0, 0, 0, 0, 0)


def test_default_costs_are_the_documented_measurements() -> None:
    assert DEFAULT_COSTS_NS == {"message": 20_000.0, "byte": 0.5, "sign": 17_500.0,
                                "verify": 42_200.0, "mac": 1_430.0, "digest": 320.0,
                                "execute": 0.0}


@pytest.mark.parametrize(("index", "name"), list(enumerate(DEFAULT_COSTS_NS)))
def test_each_operation_is_charged_its_own_price(index: int, name: str) -> None:
    charge = cost_model(CpuCosts(message=1, byte=2, sign=30, verify=400, mac=5_000,
                                 digest=60_000, execute=700_000))
    prices = {"message": 1, "byte": 2, "sign": 30, "verify": 400, "mac": 5_000,
              "digest": 60_000, "execute": 700_000}
    after = tuple(3 if k == index else 0 for k in range(7))
    assert charge(ZERO, after) == 3 * prices[name]


def test_a_step_is_charged_for_the_operations_between_two_snapshots() -> None:
    charge = cost_model(CpuCosts(**DEFAULT_COSTS_NS))
    costs = Costs(messages=10, bytes=1000, sign=1, verify=5, mac=2, digest=7)
    before = costs.snapshot()
    costs.messages += 1
    costs.bytes += 300
    costs.verify += 2
    costs.mac += 3
    costs.digest += 1
    # 20 us + 300 x 0.5 ns + 2 x 42.2 us + 3 x 1.43 us + 320 ns; nothing for the old counts
    assert charge(before, costs.snapshot()) == 20_000 + 150 + 84_400 + 4_290 + 320
    assert charge(before, before) == 0


def test_fractional_costs_round_to_whole_nanoseconds() -> None:
    charge = cost_model(CpuCosts(**DEFAULT_COSTS_NS))
    assert charge(ZERO, (0, 3, 0, 0, 0, 0, 0)) == 2  # 1.5 ns
    assert charge(ZERO, (0, 7, 0, 0, 0, 0, 0)) == 4  # 3.5 ns


def test_snapshots_must_have_seven_counters() -> None:
    charge = cost_model(CpuCosts(**DEFAULT_COSTS_NS))
    with pytest.raises(ValueError):
        charge((0, 0), (1, 1))


def test_from_spec_none_is_no_model_and_unset_fields_take_the_defaults() -> None:
    assert CpuCosts.from_spec(None) is None
    spec = parse_scenario(_data({"sign": "16us", "byte": "2ns"}), "<test>").cpu
    costs = CpuCosts.from_spec(spec)
    assert costs is not None
    assert costs.as_dict() == {**DEFAULT_COSTS_NS, "sign": 16_000.0, "byte": 2.0}
    assert CpuCosts.from_spec(parse_scenario(_data("default"), "<t>").cpu) == \
        CpuCosts(**DEFAULT_COSTS_NS)
    assert parse_scenario(_data("none"), "<test>").cpu is None


# -- in a run ------------------------------------------------------------------------------------


def _data(cpu: Any, **workload: Any) -> dict[str, Any]:
    return {"name": "cpu", "seed": 1, "duration": "1s", "nodes": 4,
            "network": {"latency": "10ms"}, "cpu": cpu,
            "workload": {"app": "kv", "clients": 1, "outstanding": 1, **workload}}


def _run(cpu: Any, **workload: Any) -> RunResult:
    result = run_scenario(parse_scenario(_data(cpu, **workload), "<test>"))
    s = result.summary
    assert s["safety"]["ok"] and s["liveness"]["ok"], (s["safety"], s["liveness"])
    return result


def test_cpu_none_charges_nothing_latency_is_pure_network() -> None:
    s = _run("none").summary
    assert s["cpu"] == {"model": "none"}
    assert s["latency_ms"]["p50"] == s["latency_ms"]["max"] == 50.0  # 5 one-way delays


def test_a_model_with_zero_prices_is_the_same_as_none() -> None:
    free = {k: "0ns" for k in DEFAULT_COSTS_NS}
    s = _run(free).summary
    assert s["cpu"]["model"] == "costs"
    assert set(s["cpu"]["utilisation"].values()) == {0.0}
    assert s["latency_ms"]["max"] == 50.0


def test_message_handling_cost_adds_to_latency_and_utilisation() -> None:
    only_messages = {k: "0ns" for k in DEFAULT_COSTS_NS} | {"message": "1ms"}
    s = _run(only_messages).summary
    # On the critical path: the primary handles the REQUEST, a backup the PRE-PREPARE, one
    # other PREPARE (2f = 2 with its own) and two COMMITs (2f+1 = 3): 5 ms on top of 50 ms.
    assert s["latency_ms"]["p50"] == s["latency_ms"]["max"] == 55.0
    util = s["cpu"]["utilisation"]
    # Per request the primary handles 7 messages (REQUEST, 3 PREPAREs, 3 COMMITs) and each
    # backup 6 (PRE-PREPARE, 2 PREPAREs, 3 COMMITs).
    backups = {util["hospital-2"], util["pharmacy-1"], util["regulator-1"]}
    assert len(backups) == 1 and backups.pop() > 0
    assert util["hospital-1"] / util["hospital-2"] == pytest.approx(7 / 6, rel=1e-3)


def test_a_busy_cpu_queues_work_so_latency_grows_with_load() -> None:
    only_messages = {k: "0ns" for k in DEFAULT_COSTS_NS} | {"message": "1ms"}
    light = _run(only_messages, outstanding=1).summary
    heavy = _run(only_messages, outstanding=8).summary
    assert heavy["latency_ms"]["p50"] > light["latency_ms"]["p50"] + 5.0
    assert heavy["cpu"]["utilisation"]["hospital-1"] > light["cpu"]["utilisation"]["hospital-1"]


def test_executed_requests_are_charged_per_request() -> None:
    """A scenario's `cpu: {execute: ...}` charges each request the state machine executed: a
    simulated run with it takes longer than the same run without it."""
    from sim.run import run_scenario

    base = {"name": "exec-cost", "seed": 3, "duration": "200ms", "nodes": 4,
            "network": {"latency": "1ms"}, "workload": {"clients": 1, "outstanding": 1,
                                                       "app": "kv"}}
    free = run_scenario(parse_scenario({**base, "cpu": "default"}, "<t>")).summary
    paid = run_scenario(parse_scenario({**base, "cpu": {"execute": "2ms"}}, "<t>")).summary
    assert paid["cpu"]["costs_ns"]["execute"] == 2_000_000.0
    # one request at a time: each pays 2 ms of execution on the replicas' critical path
    assert paid["latency_ms"]["p50"] > free["latency_ms"]["p50"] + 1.5
    assert paid["requests"]["committed"] < free["requests"]["committed"]


# -- the machine: shared cores and the load generator ---------------------------------------------

ONLY_MESSAGES = {k: "0ns" for k in DEFAULT_COSTS_NS} | {"message": "1ms"}


def test_enough_cores_are_the_same_as_a_core_per_replica() -> None:
    own = _run(ONLY_MESSAGES, outstanding=4).summary
    shared = _run(ONLY_MESSAGES | {"cores": 5}, outstanding=4).summary
    assert shared["cpu"]["costs_ns"]["cores"] == 5
    assert "cores" not in own["cpu"]["costs_ns"]
    for key in ("latency_ms", "requests", "messages", "nodes"):
        assert shared[key] == own[key], key
    assert shared["cpu"]["utilisation"] == own["cpu"]["utilisation"]


def test_replicas_sharing_cores_queue_for_them() -> None:
    own = _run(ONLY_MESSAGES).summary
    one = _run(ONLY_MESSAGES | {"cores": 1}).summary
    # A core each: 5 ms of handling on the critical path (see above). One core for all: the
    # three backups handle the PRE-PREPARE one after the other, and so on, but a request
    # never takes longer than all 25 ms of its handling in a row.
    assert own["latency_ms"]["p50"] == 55.0
    assert 55.0 < one["latency_ms"]["p50"] <= 50.0 + 25.0
    assert sum(one["cpu"]["utilisation"].values()) <= 1.0 + 1e-9


def test_the_load_generator_is_charged_per_reply_on_one_processor() -> None:
    s = _run({k: "0ns" for k in DEFAULT_COSTS_NS} | {"client": "1ms"}).summary
    # The four replies arrive together after 50 ms; the second (f + 1 = 2 matching) is
    # handled by 52 ms.
    assert s["latency_ms"]["p50"] == s["latency_ms"]["max"] == 52.0
    assert s["cpu"]["costs_ns"]["client"] == 1_000_000.0
    assert set(s["cpu"]["utilisation"].values()) == {0.0}
    assert s["cpu"]["load_generator_utilisation"] > 0.07  # 4 ms per 52 ms request
    two = _run({k: "0ns" for k in DEFAULT_COSTS_NS} | {"client": "1ms"}, clients=2).summary
    # Two clients share the one load generator: their replies queue behind each other.
    assert two["latency_ms"]["max"] > 52.0


def test_cores_must_be_a_positive_count() -> None:
    from medbft.scenario import ScenarioError

    with pytest.raises(ScenarioError, match=r"cpu\.cores") as info:
        parse_scenario(_data(ONLY_MESSAGES | {"cores": 0}), "machine.yaml")
    assert "whole number >= 1" in str(info.value)


# -- pauses: a process that is runnable but not running ------------------------------------------


def test_a_pause_follows_a_step_with_its_chance_and_lasts_its_mean_on_average() -> None:
    costs = CpuCosts(**DEFAULT_COSTS_NS, pause=1_000_000.0, pause_chance=0.1)
    charge = cost_model(costs, random.Random(7))
    one_message = (1, 0, 0, 0, 0, 0, 0)
    extra = [charge(ZERO, one_message) - 20_000 for _ in range(20_000)]
    assert min(extra) == 0
    paused = [x for x in extra if x > 0]
    assert 0.09 < len(paused) / len(extra) < 0.11
    assert 900_000 < statistics.fmean(paused) < 1_100_000
    # The same stream draws the same pauses; the model without pauses draws nothing.
    again = cost_model(costs, random.Random(7))
    assert [again(ZERO, one_message) - 20_000 for _ in range(20_000)] == extra
    rng = random.Random(7)
    state = rng.getstate()
    plain = cost_model(CpuCosts(**DEFAULT_COSTS_NS), rng)
    assert plain(ZERO, one_message) == 20_000 and rng.getstate() == state


def test_the_load_generator_pauses_too() -> None:
    costs = CpuCosts(**{k: 0.0 for k in DEFAULT_COSTS_NS}, client=1_000.0, pause=50_000.0,
                     pause_chance=0.5)
    charge = client_cost_model(costs, random.Random(1))
    charged = [charge(ZERO, ZERO) for _ in range(1_000)]
    assert min(charged) == 1_000 and max(charged) > 50_000


def test_a_model_with_pauses_needs_its_random_stream() -> None:
    costs = CpuCosts(**DEFAULT_COSTS_NS, pause=1_000.0, pause_chance=0.5)
    with pytest.raises(ValueError, match="random stream"):
        cost_model(costs)
    assert not CpuCosts(**DEFAULT_COSTS_NS, pause=1_000.0, pause_chance=0.0).pauses


PAUSING = ONLY_MESSAGES | {"message": "100us", "pause": "2ms", "pause_chance": 0.05}


def test_pauses_spread_the_latency_and_one_seed_fixes_them() -> None:
    steady = _run(ONLY_MESSAGES | {"message": "100us"}).summary
    assert steady["latency_ms"]["p99"] == steady["latency_ms"]["p50"]
    assert "pause" not in steady["cpu"]["costs_ns"]
    paused = _run(PAUSING).summary
    assert paused["cpu"]["costs_ns"]["pause"] == 2_000_000.0
    assert paused["cpu"]["costs_ns"]["pause_chance"] == 0.05
    # A request takes about a dozen steps on its critical path: most meet no pause, the
    # slowest several.
    assert paused["latency_ms"]["p50"] < steady["latency_ms"]["p50"] + 2.0
    assert paused["latency_ms"]["p99"] > steady["latency_ms"]["p99"] + 2.0
    again = _run(PAUSING).summary
    assert {k: v for k, v in again.items() if k != "wall_time_s"} == \
        {k: v for k, v in paused.items() if k != "wall_time_s"}
    other = run_scenario(parse_scenario(_data(PAUSING), "<test>"), seed=2).summary
    assert other["latency_ms"] != paused["latency_ms"]


def test_pause_and_its_chance_go_together() -> None:
    from medbft.scenario import ScenarioError

    for given, missing in (({"pause": "1ms"}, "pause_chance"),
                           ({"pause_chance": 0.01}, "pause")):
        with pytest.raises(ScenarioError, match=rf"cpu\.{missing}: missing") as info:
            parse_scenario(_data(ONLY_MESSAGES | given), "pauses.yaml")
        assert "pauses.yaml" in str(info.value)
    with pytest.raises(ScenarioError, match=r"cpu\.pause_chance"):
        parse_scenario(_data(ONLY_MESSAGES | {"pause": "1ms", "pause_chance": 2}), "p.yaml")
