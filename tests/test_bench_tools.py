"""The pure parts of the benchmark tools: the arithmetic that turns measurements into costs,
and the `cpu:` blocks they print being ones a scenario accepts.

Why this exists: bench/calibrate.py --real and bench/compare.py --calibrated are measuring
tools, never run by the tests (a real cluster is minutes of CPU and its figures depend on the
machine). Their arithmetic and their output format can still be wrong in ways no measurement
shows: a misplaced term gives plausible-looking costs, and a block the scenario parser rejects
breaks the comparison only after the real runs. So those parts are checked here, on made-up
numbers, without starting anything.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from medbft.scenario import ScenarioError, load_scenario, parse_scenario
from sim.cpu import DEFAULT_COSTS_NS, CpuCosts

ROOT = Path(__file__).resolve().parent.parent
COMPARE_YAML = ROOT / "bench" / "compare.yaml"


def _bench(name: str) -> ModuleType:
    """Import bench/<name>.py (bench/ is not a package)."""
    key = f"_bench_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module


calibrate = _bench("calibrate")
compare = _bench("compare")
run_length = _bench("run_length")

CRYPTO = {"sign": 20_000.0, "verify": 50_000.0, "mac": 1_000.0, "digest": 400.0}
# Per executed request (summed over replicas), as a simulated twin would count them.
SIM = {"messages": 6.0, "bytes": 1_000.0, "sign": 0.0, "verify": 1.0, "mac": 12.0,
       "digest": 1.0, "execute": 1.0}


def _window(message_ns: float, execute_ns: float, executed: int = 400) -> object:
    """The window a node would show if each message cost `message_ns`, each executed
    request `execute_ns`, and crypto and bytes exactly what SIM and CRYPTO say."""
    messages = int(SIM["messages"] * executed)
    apart = executed * (sum(CRYPTO[k] * SIM[k] for k in CRYPTO)
                        + DEFAULT_COSTS_NS["byte"] * SIM["bytes"])
    cpu_ns = message_ns * messages + execute_ns * executed + apart
    return calibrate.Window(seconds=3.0, node_cpu_s=cpu_ns / 1e9, messages=messages,
                            executed=executed)


def test_real_costs_recover_the_message_and_execute_costs_they_were_built_from() -> None:
    windows = {"kv": _window(150_000, 0), "ledger": _window(150_000, 40_000, executed=300)}
    costs = calibrate.real_costs(windows, {"kv": SIM, "ledger": SIM}, CRYPTO)
    assert costs["kv"]["message"] == pytest.approx(150_000)
    assert costs["kv"]["execute"] == 0.0
    assert costs["ledger"]["message"] == pytest.approx(150_000)
    assert costs["ledger"]["execute"] == pytest.approx(40_000)
    for app in costs:
        assert set(costs[app]) == set(DEFAULT_COSTS_NS)
        assert costs[app]["verify"] == CRYPTO["verify"]
        assert costs[app]["byte"] == DEFAULT_COSTS_NS["byte"]


def test_real_costs_need_a_kv_run() -> None:
    with pytest.raises(ValueError, match="kv"):
        calibrate.real_costs({"ledger": _window(1, 1)}, {"ledger": SIM}, CRYPTO)


def test_a_window_is_the_difference_of_two_samples_and_refuses_an_empty_one() -> None:
    a = {"t": 10.0, "node_cpu_s": 5.0, "loadgen_cpu_s": 1.0, "messages": 100, "executed": 8}
    b = {"t": 13.0, "node_cpu_s": 7.5, "loadgen_cpu_s": 1.5, "messages": 2_500, "executed": 408}
    win = calibrate.window_between(a, b, nodes=4)
    assert (win.seconds, win.node_cpu_s, win.messages, win.executed) == (3.0, 2.5, 2_400, 400)
    assert win.loadgen_cpu_s == pytest.approx(0.5)
    with pytest.raises(ValueError, match="nothing to divide by"):
        calibrate.window_between(a, a, nodes=4)


def test_per_executed_divides_by_the_executed_requests() -> None:
    out = calibrate.per_executed({"messages": 60, "bytes": 900, "execute": 10})
    assert out == {"messages": 6.0, "bytes": 90.0, "execute": 1.0}
    with pytest.raises(ValueError, match="no request"):
        calibrate.per_executed({"messages": 6, "execute": 0})


def test_the_printed_cpu_block_is_one_a_scenario_accepts() -> None:
    costs = {"message": 171_234.5, "byte": 0.5, "sign": 18_500.0, "verify": 44_600.0,
             "mac": 902.0, "digest": 338.0, "execute": 37_500.0}
    block = yaml.safe_load(calibrate.cpu_block_text(costs))
    assert list(block["cpu"]) == list(DEFAULT_COSTS_NS)
    raw = yaml.safe_load(COMPARE_YAML.read_text())
    raw["cpu"] = block["cpu"]
    parsed = CpuCosts.from_spec(parse_scenario(raw, "test").cpu)
    assert parsed is not None
    for k, v in costs.items():
        assert parsed.as_dict()[k] == pytest.approx(v, rel=1e-3), k


def test_the_machine_terms_are_the_cores_and_the_load_generators_cpu_per_reply() -> None:
    win = calibrate.Window(seconds=3.0, node_cpu_s=2.0, messages=7_000, executed=1_200,
                           loadgen_cpu_s=0.18)
    assert calibrate.machine_terms(win, 2) == {"cores": 2, "client": pytest.approx(150_000)}
    costs = {k: 1_000.0 for k in DEFAULT_COSTS_NS} | calibrate.machine_terms(win, 2)
    block = yaml.safe_load(calibrate.cpu_block_text(costs))["cpu"]
    assert block["cores"] == 2 and block["client"] == "150us"
    raw = yaml.safe_load(COMPARE_YAML.read_text())
    raw["cpu"] = block
    parsed = CpuCosts.from_spec(parse_scenario(raw, "test").cpu)
    assert parsed is not None and parsed.cores == 2 and parsed.client == 150_000.0


def test_compare_keeps_cores_a_count_and_can_leave_the_machine_out(tmp_path: Path) -> None:
    by_app = {"kv": {"message": "150us", "cores": 2, "client": "120us"},
              "ledger": {"message": "150us", "execute": "40us", "cores": 2, "client": "200us"}}
    path = tmp_path / "real.json"
    path.write_text(json.dumps({"mode": "real", "cpu_yaml_by_app": by_app}))
    blocks = compare.load_calibration(str(path))
    assert blocks == by_app
    sc = load_scenario(COMPARE_YAML, compare.sim_overrides(0.05, "ledger", blocks["ledger"],
                                                           "2s"))
    assert sc.cpu is not None and sc.cpu.cores == 2 and sc.cpu.client_ns == 200_000
    bare = compare.without(blocks, compare.MACHINE)
    assert bare == {"kv": {"message": "150us"},
                    "ledger": {"message": "150us", "execute": "40us"}}


def test_a_fitted_block_keeps_its_pauses_through_compare(tmp_path: Path) -> None:
    costs = {k: 1_000.0 for k in DEFAULT_COSTS_NS} | {"pause": 400_000.0,
                                                       "pause_chance": 0.03}
    block = calibrate.cpu_block(costs)
    assert block["pause"] == "400us" and block["pause_chance"] == 0.03
    path = tmp_path / "real.json"
    path.write_text(json.dumps({"mode": "real", "cpu_yaml_by_app": {"kv": block}}))
    blocks = compare.load_calibration(str(path))
    assert blocks["kv"]["pause_chance"] == 0.03  # a number, not the text "0.03"
    sc = load_scenario(COMPARE_YAML, compare.sim_overrides(0.05, "kv", blocks["kv"], "2s"))
    parsed = CpuCosts.from_spec(sc.cpu)
    assert parsed is not None and parsed.pause == 400_000.0 and parsed.pause_chance == 0.03
    assert "pause" not in compare.without(blocks, compare.PAUSES)["ledger"]


def test_the_pause_fit_finds_the_terms_that_made_a_distribution() -> None:
    # A simulated run made with known pauses stands for the real one: the fit, searching the
    # grid from scratch, lands on them (or on a point that reproduces them as closely).
    block = {"message": "150us", "cores": 2, "client": "120us"}
    simulate = calibrate.simulate_pauses(str(COMPARE_YAML), "kv", block, 0.01, "1s")
    target = simulate(0.1, 0.4)
    fit = calibrate.fit_pauses(simulate, target, chances=(0.01, 0.1), means_ms=(0.1, 0.4))
    assert (fit.chance, fit.mean_ns) == (0.1, 400_000.0)
    assert fit.error == 0.0 and fit.simulated_ms == {q: target[q] for q in calibrate.FITTED}
    # The four grid points, then the neighbours of the best at 1.5x spacing.
    assert len(fit.tried) == 4 + 8 and fit.tried[0][:2] == (0.01, 0.1)
    assert calibrate.pause_error({"p50": None, "p95": 1.0, "p99": 1.0}, target) == float("inf")


def test_compare_reads_the_blocks_a_real_calibration_writes(tmp_path: Path) -> None:
    by_app = {"kv": {"message": "150us", "execute": "0ns"},
              "ledger": {"message": "150us", "execute": "40us"}}
    path = tmp_path / "real.json"
    path.write_text(json.dumps({"mode": "real", "cpu_yaml_by_app": by_app, "cpu_yaml": {}}))
    assert compare.load_calibration(str(path)) == by_app
    for app, block in by_app.items():  # each goes into the scenario whole, as compare does
        sc = load_scenario(COMPARE_YAML, compare.sim_overrides(0.05, app, block, "2s"))
        assert sc.workload.app == app
        assert sc.cpu is not None and sc.cpu.execute_ns == (40_000 if app == "ledger" else 0)
        assert sc.cpu.sign_ns is None  # unset: the model's default, as in the block


def test_compare_accepts_one_block_for_every_app(tmp_path: Path) -> None:
    yaml_path = tmp_path / "cpu.yaml"
    yaml_path.write_text("cpu:\n  message: 150us\n  execute: 30us\n")
    blocks = compare.load_calibration(str(yaml_path))
    assert blocks["kv"] == blocks["ledger"] == {"message": "150us", "execute": "30us"}
    memory = tmp_path / "memory.json"  # the in-memory calibration's JSON
    memory.write_text(json.dumps({"cpu_yaml": {"message": "15us", "byte": "2.25ns"}}))
    assert compare.load_calibration(str(memory))["ledger"] == {"message": "15us",
                                                               "byte": "2.25ns"}


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", "expected a mapping"),
    ('{"name": "x"}', "no cpu block"),
    ('{"cpu": "fast"}', "not a mapping"),
    ('{"cpu_yaml_by_app": {"ledger": {"message": "1us"}}}', "no 'kv' block"),
])
def test_compare_says_what_is_wrong_with_a_calibration_file(tmp_path: Path, text: str,
                                                            message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(compare.CalibrationError, match=message):
        compare.load_calibration(str(path))
    with pytest.raises(compare.CalibrationError, match="cannot read"):
        compare.load_calibration(str(tmp_path / "missing.json"))


def test_a_bad_cost_in_a_block_is_a_scenario_error() -> None:
    with pytest.raises(ScenarioError, match="cpu"):
        load_scenario(COMPARE_YAML, compare.sim_overrides(0.05, "kv", {"message": "fast"}, None))


def test_within_marks_the_bounds() -> None:
    assert compare.within(10.0, 10.9, 0.10) == (pytest.approx(1.09), True)
    assert compare.within(10.0, 11.0, 0.10)[1]  # the bound itself is within
    assert not compare.within(10.0, 11.2, 0.10)[1]
    assert not compare.within(10.0, 8.0, 0.10)[1]
    assert compare.within(None, 3.0, 0.2) == (None, False)
    assert compare.within(0.0, 3.0, 0.2) == (None, False)


def test_the_proc_readers_read_this_process_and_forget_a_gone_one() -> None:
    import os

    assert calibrate.process_cpu_s(os.getpid()) > 0
    assert compare.process_cpu_s(os.getpid()) > 0
    assert calibrate.run_queue_wait_s(os.getpid()) >= 0
    gone = 2**22 + 12_345  # above the largest pid Linux allows (2**22): no such process
    assert calibrate.process_cpu_s(gone) == 0.0
    assert calibrate.run_queue_wait_s(gone) == 0.0


@pytest.mark.pure_python  # wraps Replica.step on each instance
def test_the_in_memory_calibration_counts_every_costs_counter() -> None:
    """A few requests through the in-memory cluster (no timing asserted): every counter the
    replicas keep, `execute` included, lands in the run's operation counts."""
    run = calibrate.drive_cluster(4, 64, warmup=2, batch_size=1)
    assert set(run["ops"]) == {"messages", "bytes", "sign", "verify", "mac", "digest",
                               "execute"}
    assert run["ops"]["execute"] == 4 * 4  # each of 4 replicas executed each request
    assert run["ops"]["messages"] > 0 and run["steps"] > 0


def test_compare_needs_the_loopback_calibration_beside_a_wan_one(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        compare.main(["--calibrated-wan", "results/calibration-wan.json"])
    assert info.value.code == 2
    assert "--calibrated-wan needs --calibrated" in capsys.readouterr().err


def test_the_scenarios_sim_speed_runs_against_real_time_are_shipped_and_parse() -> None:
    sim_speed = _bench("sim_speed")
    assert sim_speed.REAL_TIME_SCENARIOS
    for path in sim_speed.REAL_TIME_SCENARIOS:
        spec = sim_speed.scenario_spec(path)
        scenario = parse_scenario(spec, path)  # what run_case parses, from the shipped file
        assert scenario == load_scenario(ROOT / path)
        assert scenario.n >= 64 and scenario.duration_ns >= 2_000_000_000


def test_sim_speed_times_the_whole_run_command(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The whole `medbft run` a user types is timed as a real command (a failing one stops
    the benchmark with its error), and the verdict counts the figures in."""
    sim_speed = _bench("sim_speed")
    assert sim_speed.time_command("scenarios/baseline.yaml", plots=False) > 0
    # the command loads the project's cached bytecode, as a user's second run does, even
    # where PYTHONDONTWRITEBYTECODE keeps Python from writing it
    root = Path(sim_speed.ROOT)
    for module in ("node/messages.py", "sim/run.py", "medbft/cli/run.py"):
        assert Path(importlib.util.cache_from_source(str(root / module))).is_file()
    absent = tmp_path / "absent.yaml"
    with pytest.raises(SystemExit, match=r"absent\.yaml"):
        sim_speed.time_command(str(absent), plots=False)
    rows = [("a.yaml", {"compiled": True, "sim_s": 2.0, "command_s": 1.5,
                        "command_no_plots_s": 1.0}),
            ("b.yaml", {"compiled": False, "sim_s": 2.0, "command_s": 6.0,
                        "command_no_plots_s": 1.9}),
            ("c.yaml", {"compiled": True, "sim_s": 2.0, "command_s": 6.0,
                        "command_no_plots_s": 4.0}),
            ("d.yaml", {"compiled": True, "sim_s": 2.0})]  # not timed: left out
    sim_speed.print_commands(rows)
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[1:] if line] == ["a.yaml", "b.yaml", "c.yaml"]
    assert out[1].endswith("yes") and out[2].endswith("without figures") and out[3].endswith("no")


def test_run_length_gives_peak_memory_per_extra_committed_request() -> None:
    short = {"committed": 600, "peak_rss_mb": 60.0}
    long = {"committed": 6_400, "peak_rss_mb": 152.0}
    assert run_length.memory_growth_kb(short, long) == pytest.approx(92 * 1024 / 5_800)
    with pytest.raises(ValueError, match="no more requests"):
        run_length.memory_growth_kb(long, long)



def test_sampling_sums_py_spy_stacks_by_file_function_and_caller() -> None:
    """bench/sampling.py reads py-spy's raw format (collapsed stacks with a count): own time
    goes to the innermost frame, inclusive time once to every function on the stack (a
    recursive one counted once), and files are named short."""
    sampling = _bench("sampling")
    root = str(ROOT)
    lines = [
        f"main ({root}/node/server.py:10);verify ({root}/node/crypto.py:200) 30\n",
        f"main ({root}/node/server.py:10);walk ({root}/node/quorum.py:1);"
        f"walk ({root}/node/quorum.py:2) 10\n",
        "main (/usr/lib/python3.11/site-packages/aiohttp/web_ws.py:5) 5\n",
        "run (/usr/lib/python3.11/asyncio/runners.py:118) 5\n",
        "\n", "garbage line\n",
    ]
    profile = sampling.read_raw(lines)
    assert profile.samples == 50
    assert profile.by_file == {"node/crypto.py": 30, "node/quorum.py": 10, "aiohttp": 5,
                               "asyncio/runners.py": 5}
    assert profile.by_function["verify (node/crypto.py)"] == 30
    assert profile.inclusive["main (node/server.py)"] == 40
    assert profile.inclusive["walk (node/quorum.py)"] == 10  # on the stack twice, counted once
    assert profile.share(30) == 0.6


def test_sampling_splits_perf_samples_by_process_and_library() -> None:
    """bench/sampling.py names the nodes and the load generator by pid, the idle task and
    the samplers by what they are, and groups shared libraries (perf report's pid,dso
    lines, `|`-separated)."""
    sampling = _bench("sampling")
    lines = [
        "# comment",
        " 18.50% |      0:swapper      |[kernel.kallsyms]",
        " 10.00% |    101:python       |libpython3.11.so.1.0",
        "  4.00% |    101:python       |_rust.abi3.so",
        "  1.00% |    101:python       |[kernel.kallsyms]",
        "  0.50% |    101:python       |libcrypto.so.3",
        "  0.25% |    101:python       |libssl.so.3",
        "  7.00% |    202:python       |libpython3.11.so.1.0",
        "  3.00% |    303:py-spy       |[kernel.kallsyms]",
        "  2.00% |    404:redis-server |redis-server",
        "garbage",
    ]
    split = sampling.cpu_split(lines, {101: "node-1", 202: "load"})
    assert split["idle"] == {"kernel": 18.5}
    assert split["node-1"] == {"Python": 10.0, "cryptography": 4.0, "kernel": 1.0,
                               "OpenSSL": 0.75}
    assert split["load"] == {"Python": 7.0}
    assert split["samplers"] == {"kernel": 3.0}
    assert split["other"] == {"other": 2.0}


def test_run_length_gives_cpu_per_committed_request_by_window_of_simulated_time() -> None:
    """Slices are (simulated s, CPU s, committed so far); a window closes at the first slice
    reaching its end, the drain after the duration joins the last window, and a window
    without a committed request is left out."""
    slices = [(0.0, 10.0, 0), (1.0, 10.5, 100), (2.0, 11.0, 200), (3.0, 11.0, 200),
              (4.0, 11.4, 200), (5.0, 12.0, 300), (6.0, 12.6, 400), (6.5, 12.9, 410)]
    got = run_length.cost_by_window(slices, 2.0, 6.0)
    assert got == pytest.approx([1.0 / 200 * 1e6, 1.5 / 210 * 1e6])  # 2-4 s: none
    assert run_length.cost_by_window(slices[:3], 2.0, 2.0) == pytest.approx([1e6 / 200])


def test_run_length_reports_the_median_run_with_every_wall_time() -> None:
    runs = [{"wall_s": 3.0, "n": 1}, {"wall_s": 1.0, "n": 2}, {"wall_s": 2.0, "n": 3},
            {"wall_s": 4.0, "n": 4}]
    row = run_length.median_row(runs)
    assert row["n"] == 3 and row["wall_s_all"] == [3.0, 1.0, 2.0, 4.0]
    assert run_length.median_row(runs[:3])["n"] == 3


def test_sim_speed_floor_is_messages_per_request_over_the_per_request_costs() -> None:
    """bench/sim_speed.py's n = 4 floor: 29 messages per request, 25 us to sign, 75 us to
    verify, 160 us of ledger execution: 29 / 260 us."""
    sim_speed = _bench("sim_speed")
    assert sim_speed.floor_msgs_per_s(29.0, 25e-6, 75e-6, 160e-6) == pytest.approx(29 / 260e-6)
    assert sim_speed.floor_msgs_per_s(29.0, 25e-6, 75e-6, 0.0) == pytest.approx(290_000)


# A stand-in for the JavaScript BFT-Simulator with the surface bench/peer_sim.js uses: a
# config module the simulator reads when it loads, and a Simulator whose runOnce records one
# result per agreement (messages and simulated milliseconds), as the peer's does.
_FAKE_SIMULATOR = """
'use strict';
const config = require('./config');
class Simulator {
    constructor(cfg) { this.cfg = cfg; this.simulationResults = []; this.runs = 0; }
    runOnce() {
        const n = config.nodeNum;
        if (config.protocol !== 'pbft' || config.networkDelay.std !== 0) throw new Error('shape');
        const spin = Date.now() + 2; while (Date.now() < spin) {}
        this.simulationResults.push({latency: 30, totalMsgCount: 2 * n * n});
    }
    reset() { this.runs += 1; }
}
module.exports = Simulator;
"""


def _fake_peer(root: Path) -> Path:
    (root / "ba-algo").mkdir(parents=True)
    (root / "ba-algo" / "pbft.js").write_text("module.exports = {};\n")
    (root / "node_modules").mkdir()
    (root / "config.js").write_text("module.exports = {nodeNum: 16, protocol: 'hotstuff-NS', "
                                    "networkDelay: {mean: 0.25, std: 0.05}};\n")
    (root / "simulator.js").write_text(_FAKE_SIMULATOR)
    return root


def _require_node() -> None:
    """bench/peer_sim.js runs under Node.js: skip without it, except under CI (`CI` set, as
    `.ci/run` sets it), where its absence fails: CI must not pass by testing nothing."""
    if shutil.which("node") is not None:
        return
    if os.environ.get("CI"):
        pytest.fail("no Node.js (`node`) to run bench/peer_sim.js; CI is set, so this fails "
                    "rather than skips", pytrace=False)
    pytest.skip("no Node.js (`node`) to run bench/peer_sim.js")


def test_the_peer_harness_counts_the_peers_messages_over_its_runs(tmp_path: Path) -> None:
    _require_node()
    sim_speed = _bench("sim_speed")
    peer = sim_speed.check_peer(str(_fake_peer(tmp_path / "peer")))
    row = sim_speed.run_peer(peer, 8, 0.05)
    assert row["n"] == 8 and row["runs"] >= 3
    assert row["messages"] == row["runs"] * 2 * 8 * 8  # the shape reached the fake: n = 8
    assert row["sim_s"] == pytest.approx(row["runs"] * 0.030)
    assert row["wall_s"] >= 0.05
    assert row["msgs_per_wall_s"] == pytest.approx(row["messages"] / row["wall_s"])
    many = sim_speed.peer_now(peer, 4, 0.01, repeat=3)
    assert len(many["msgs_per_wall_s_all"]) == 3
    assert many["msgs_per_wall_s"] == sorted(many["msgs_per_wall_s_all"])[1]  # the median


def test_the_peer_checkout_is_checked_before_anything_runs(tmp_path: Path) -> None:
    _require_node()  # without it, check_peer stops at that first
    sim_speed = _bench("sim_speed")
    with pytest.raises(SystemExit, match="no BFT-Simulator checkout"):
        sim_speed.check_peer(str(tmp_path))
    peer = _fake_peer(tmp_path / "peer")
    (peer / "node_modules").rmdir()
    with pytest.raises(SystemExit, match="npm install"):
        sim_speed.check_peer(str(peer))


@pytest.mark.parametrize("seconds", ["0", "-1", "nan", "inf", "soon"])
def test_peer_seconds_must_be_a_positive_number(
        seconds: str, capsys: pytest.CaptureFixture[str]) -> None:
    sim_speed = _bench("sim_speed")
    with pytest.raises(SystemExit) as exc:
        sim_speed.main(["--peer-seconds", seconds, "--max-n", "4"])
    assert exc.value.code == 2  # a usage error, before anything runs
    assert "--peer-seconds" in capsys.readouterr().err
    assert sim_speed.positive_seconds("2.5") == 2.5


def test_targets_are_judged_against_the_figures_asked_for() -> None:
    sim_speed = _bench("sim_speed")
    rows = [{"n": 4, "msgs_per_wall_s": 120_000.0, "peer_now": {"msgs_per_wall_s": 100_000.0}},
            {"n": 64, "msgs_per_wall_s": 160_000.0, "peer_now": {"msgs_per_wall_s": 75_000.0}},
            {"n": 128, "msgs_per_wall_s": 60_000.0},
            {"n": 512, "msgs_per_wall_s": 1.0}]
    # Against the figures: 4 needs 246,000 (1.0x), 64 150,000 (2x), 128 52,600 (2x).
    assert sim_speed.targets_met(rows, side_by_side=False) == ([64, 128], [4])
    # Side by side: 4 is 1.2x, 64 2.13x; 128 has no side-by-side figure; 512 no target.
    assert sim_speed.targets_met(rows, side_by_side=True) == ([4, 64], [])
    assert sim_speed.now_columns(rows[0]).split() == ["100,000", "1.20x"]
    assert sim_speed.now_columns(rows[2]).split() == ["-", "-"]
