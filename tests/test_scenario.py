"""Tests for the scenario file format (medbft.scenario) and unit parsing (medbft.units).

Researchers only ever see these modules through error messages, so most tests pin down that a bad
file yields a ScenarioError naming the file, the dotted field path and what is allowed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from medbft.scenario import (
    CpuSpec,
    CrashFault,
    LatencySpec,
    RecoverFault,
    ScenarioError,
    apply_overrides,
    load_scenario,
    parse_scenario,
    scenario_hash,
    to_dict,
)
from medbft.units import (
    format_bandwidth_bps,
    format_duration_ns,
    parse_bandwidth_bps,
    parse_duration_ns,
    parse_duration_ns_float,
    parse_rate_per_s,
    parse_size_bytes,
)

BASELINE = """\
name: baseline
description: Two hospitals, a pharmacy and a regulator agree on a steady request stream.
seed: 1
duration: 10s        # clients submit for this long; then the run drains
drain: 5s            # optional, default 5s
nodes:               # order matters: nodes[0] is the primary of view 0
  - {id: hospital-1, role: hospital}
  - {id: hospital-2, role: hospital}
  - {id: pharmacy-1, role: pharmacy}
  - {id: regulator-1, role: regulator}
network:
  latency: 10ms
  bandwidth: 1Gbps
  loss: 0.0
  links:
    - {between: [hospital-1, regulator-1], latency: 40ms}   # both directions
    - {from: client-1, to: hospital-1, loss: 0.1}           # one direction only
protocol:
  batch_size: 1
  batch_timeout: 0ms
  max_in_flight: 16
  checkpoint_interval: 128
  watermark_window: 256
  view_change_timeout: 500ms
  client_timeout: 1s
cpu: none
workload:
  clients: 1
  outstanding: 1
  op_size: 64B
faults:
  - {at: 3s, crash: hospital-1}
  - {at: 6s, recover: hospital-1}
expect: {safety: true, liveness: true}
"""

MS = 1_000_000
S = 1_000_000_000


def base() -> dict[str, Any]:
    return yaml.safe_load(BASELINE)


def write(tmp_path: Path, data: dict[str, Any] | str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def minimal(**extra: Any) -> dict[str, Any]:
    return {"name": "m", "duration": "1s", "nodes": 4, **extra}


# ---------------------------------------------------------------------------------------------
# Valid input


def test_baseline_parses_to_expected_values(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, BASELINE))
    assert s.name == "baseline"
    assert s.description.startswith("Two hospitals")
    assert s.seed == 1
    assert s.duration_ns == 10 * S and s.drain_ns == 5 * S and s.end_ns == 15 * S
    assert [(n.id, n.role) for n in s.nodes] == [
        ("hospital-1", "hospital"), ("hospital-2", "hospital"),
        ("pharmacy-1", "pharmacy"), ("regulator-1", "regulator"),
    ]
    assert (s.n, s.f) == (4, 1)
    assert s.clients == ("client-1",)
    net = s.network
    assert net.latency == LatencySpec(dist="constant", value="10ms")
    assert net.latency.value_ns == 10 * MS and net.latency.mean_ns is None
    assert net.bandwidth_bps == 1_000_000_000
    assert net.loss == 0.0
    first, second = net.links
    assert (first.src, first.dst, first.both) == ("hospital-1", "regulator-1", True)
    assert first.latency is not None and first.latency.value_ns == 40 * MS
    assert first.bandwidth_bps is None and first.loss is None
    assert (second.src, second.dst, second.both) == ("client-1", "hospital-1", False)
    assert second.latency is None and second.loss == 0.1
    p = s.protocol
    assert (p.batch_size, p.batch_timeout_ns, p.max_in_flight) == (1, 0, 16)
    assert (p.checkpoint_interval, p.watermark_window) == (128, 256)
    assert (p.view_change_timeout_ns, p.client_timeout_ns) == (500 * MS, S)
    assert s.cpu is None
    w = s.workload
    assert (w.clients, w.outstanding, w.rate_per_s, w.op_size_bytes) == (1, 1, None, 64)
    assert s.faults == (CrashFault(at="3s", crash="hospital-1"),
                        RecoverFault(at="6s", recover="hospital-1"))
    assert s.faults[0].at_ns == 3 * S and s.faults[1].node == "hospital-1"
    assert (s.expect.safety, s.expect.liveness) == (True, True)


def test_defaults_for_a_minimal_scenario() -> None:
    s = parse_scenario(minimal(), "m.yaml")
    assert s.seed == 1 and s.description == "" and s.drain_ns == 5 * S
    assert s.network.latency.dist == "constant" and s.network.latency.value_ns == 0
    assert s.network.bandwidth_bps is None and s.network.loss == 0.0 and s.network.links == ()
    assert s.protocol.max_in_flight == 16 and s.protocol.watermark_window == 256
    assert s.cpu is None
    assert (s.workload.clients, s.workload.outstanding, s.workload.rate_per_s) == (1, 1, None)
    assert s.workload.op_size_bytes == 64
    assert s.faults == ()
    assert (s.expect.safety, s.expect.liveness) == (None, None)


def test_null_sections_mean_defaults() -> None:
    s = parse_scenario(minimal(network=None, faults=None, protocol=None, workload=None), "m")
    assert s.faults == () and s.protocol.batch_size == 1 and s.workload.outstanding == 1


def test_scenario_is_frozen() -> None:
    s = parse_scenario(minimal(), "m")
    with pytest.raises(ValidationError):
        s.seed = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("nodes", "ids", "f"),
    [
        (4, ["hospital-1", "pharmacy-1", "regulator-1", "hospital-2"], 1),
        (7, ["hospital-1", "pharmacy-1", "regulator-1", "hospital-2", "pharmacy-2",
             "regulator-2", "hospital-3"], 2),
        ({"hospital": 3, "pharmacy": 2, "regulator": 2},
         ["hospital-1", "hospital-2", "hospital-3", "pharmacy-1", "pharmacy-2", "regulator-1",
          "regulator-2"], 2),
        ({"regulator": 1, "hospital": 2, "pharmacy": 1},
         ["regulator-1", "hospital-1", "hospital-2", "pharmacy-1"], 1),
    ],
)
def test_node_count_forms(nodes: Any, ids: list[str], f: int) -> None:
    s = parse_scenario(minimal(nodes=nodes), "m")
    assert list(s.node_ids) == ids
    assert [n.role for n in s.nodes] == [i.split("-")[0] for i in ids]
    assert s.f == f


def test_ten_nodes_tolerate_three_faults() -> None:
    assert parse_scenario(minimal(nodes=10), "m").f == 3


@pytest.mark.parametrize(
    ("latency", "expected"),
    [
        ("10ms", {"dist": "constant", "value_ns": 10 * MS}),
        (0, {"dist": "constant", "value_ns": 0}),
        ({"dist": "constant", "value": "1.5ms"}, {"dist": "constant", "value_ns": 1_500_000}),
        ({"dist": "uniform", "low": "5ms", "high": "15ms"},
         {"dist": "uniform", "low_ns": 5 * MS, "high_ns": 15 * MS}),
        ({"dist": "normal", "mean": "10ms", "std": "2ms"},
         {"dist": "normal", "mean_ns": 10 * MS, "std_ns": 2 * MS}),
        ({"dist": "lognormal", "mean": "10ms", "std": "2ms"},
         {"dist": "lognormal", "mean_ns": 10 * MS, "std_ns": 2 * MS}),
        ({"dist": "exponential", "mean": "3ms"}, {"dist": "exponential", "mean_ns": 3 * MS}),
    ],
)
def test_latency_forms(latency: Any, expected: dict[str, Any]) -> None:
    spec = parse_scenario(minimal(network={"latency": latency}), "m").network.latency
    dumped = {k: v for k, v in spec.model_dump().items() if v is not None}
    assert dumped == expected


def test_lognormal_params_reproduce_mean_and_std() -> None:
    import math

    spec = parse_scenario(
        minimal(network={"latency": {"dist": "lognormal", "mean": "10ms", "std": "2ms"}}), "m"
    ).network.latency
    mu, sigma = spec.lognormal_params()
    mean = math.exp(mu + sigma**2 / 2)
    std = math.sqrt((math.exp(sigma**2) - 1) * math.exp(2 * mu + sigma**2))
    assert mean == pytest.approx(10 * MS) and std == pytest.approx(2 * MS)


@pytest.mark.parametrize(
    ("cpu", "expected"),
    [
        ("none", None),
        (None, None),
        ("default", CpuSpec()),
        ({}, CpuSpec()),
        ({"message": "20us", "byte": "0.5ns", "sign": "16us", "verify": "43us", "mac": "1.3us",
          "digest": "1us"},
         CpuSpec(message="20us", byte="0.5ns", sign="16us", verify="43us", mac="1.3us",
                 digest="1us")),
    ],
)
def test_cpu_forms(cpu: Any, expected: CpuSpec | None) -> None:
    assert parse_scenario(minimal(cpu=cpu), "m").cpu == expected


def test_cpu_costs_are_float_nanoseconds() -> None:
    cpu = parse_scenario(minimal(cpu={"byte": "0.5ns", "mac": "1.3us"}), "m").cpu
    assert cpu is not None and cpu.byte_ns == 0.5 and cpu.mac_ns == 1300.0
    assert cpu.sign_ns is None


@pytest.mark.parametrize(
    ("workload", "outstanding", "rate", "size"),
    [
        ({"clients": 4}, 1, None, 64),
        ({"outstanding": 8}, 8, None, 64),
        ({"rate": "200/s"}, None, 200.0, 64),
        ({"rate": "12000/min", "op_size": "1KiB"}, None, 200.0, 1024),
        ({"rate": 50, "op_size": 4096}, None, 50.0, 4096),
        ({"outstanding": 2, "op_size": "1KB"}, 2, None, 1000),
    ],
)
def test_workload_forms(workload: dict[str, Any], outstanding: int | None, rate: float | None,
                        size: int) -> None:
    w = parse_scenario(minimal(workload=workload), "m").workload
    assert (w.outstanding, w.rate_per_s, w.op_size_bytes) == (outstanding, rate, size)


def test_clients_are_derived_from_workload() -> None:
    s = parse_scenario(minimal(workload={"clients": 3}), "m")
    assert s.clients == ("client-1", "client-2", "client-3")


def test_link_to_a_client_is_allowed() -> None:
    s = parse_scenario(minimal(workload={"clients": 2}, network={
        "links": [{"from": "client-2", "to": "hospital-1", "bandwidth": "10Mbps"}]}), "m")
    assert s.network.links[0].bandwidth_bps == 10_000_000


def test_faults_are_sorted_stably_by_time() -> None:
    s = parse_scenario(minimal(faults=[
        {"at": "2s", "recover": "hospital-1"},
        {"at": "1s", "crash": "hospital-1"},
        {"at": "2s", "crash": "pharmacy-1"},
        {"at": 0, "crash": "regulator-1"},
    ]), "m")
    assert [(type(f).__name__, f.at_ns, f.node) for f in s.faults] == [
        ("CrashFault", 0, "regulator-1"),
        ("CrashFault", S, "hospital-1"),
        ("RecoverFault", 2 * S, "hospital-1"),
        ("CrashFault", 2 * S, "pharmacy-1"),
    ]


def test_fault_at_the_very_end_is_allowed() -> None:
    s = parse_scenario(minimal(drain="1s", faults=[{"at": "2s", "crash": "hospital-1"}]), "m")
    assert s.faults[0].at_ns == 2 * S


# ---------------------------------------------------------------------------------------------
# Bad input: every problem names the file, the field and what is allowed


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value

    return mutate


BAD_CASES: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("unknown top-level field", _set("colour", "blue"), "colour",
     "allowed: name, description, seed, duration"),
    ("misspelt top-level field", _set("sed", 3), "sed", "did you mean 'seed'?"),
    ("unknown nested field", _set("network.jitter", "2ms"), "network.jitter",
     "allowed: latency, bandwidth, loss, links"),
    ("unknown field in a list item", _set("network.links.0.delay", "2ms"),
     "network.links[0].delay", "allowed: between, from, to, latency, bandwidth, loss"),
    ("bad duration", _set("duration", "fast"), "duration", "such as 10ms"),
    ("bare number duration", _set("drain", 5), "drain", "add a unit"),
    ("zero duration", _set("duration", "0s"), "duration", "greater than 0"),
    ("bad latency", _set("network.latency", "fast"), "network.latency",
     "{dist: normal, mean: 10ms, std: 2ms}"),
    ("bad latency dist", _set("network.latency", {"dist": "gauss", "mean": "1ms"}),
     "network.latency.dist", "constant, uniform, normal, lognormal, exponential"),
    ("latency missing a parameter", _set("network.latency", {"dist": "normal", "mean": "1ms"}),
     "network.latency.std", "needs mean and std"),
    ("latency with a foreign parameter",
     _set("network.latency", {"dist": "exponential", "mean": "1ms", "std": "1ms"}),
     "network.latency.std", "allowed: dist, mean"),
    ("uniform low above high",
     _set("network.latency", {"dist": "uniform", "low": "5ms", "high": "1ms"}),
     "network.latency.high", "must be >= low"),
    ("bare number latency", _set("network.latency", 10), "network.latency",
     "a bare number is ambiguous; expected a duration such as 10ms"),
    ("non-text link endpoint", _set("network.links.0.between", [1, "hospital-1"]),
     "network.links[0].between[0]", "such as hospital-1 or client-1"),
    ("non-text field name", _set("network.7", 1), "network.7", "field names must be text"),
    ("bad link latency", _set("network.links.0.latency", "slow"), "network.links[0].latency",
     "such as 10ms"),
    ("bad bandwidth", _set("network.bandwidth", 1000), "network.bandwidth",
     "units: bps, Kbps, Mbps, Gbps"),
    ("negative loss", _set("network.loss", -0.1), "network.loss", "probability in [0, 1)"),
    ("loss of one", _set("network.links.1.loss", 1), "network.links[1].loss",
     "probability in [0, 1)"),
    ("n=3", _set("nodes", 3), "nodes", "n >= 3f+1"),
    ("n=3 listed", lambda d: d["nodes"].pop(), "nodes", "at least 4 nodes"),
    ("duplicate ids", _set("nodes.3.id", "hospital-1"), "nodes[3].id", "must be unique"),
    ("bad node id", _set("nodes.0.id", "Hospital 1"), "nodes[0].id", "lowercase letters"),
    ("client-like node id", _set("nodes.0.id", "client-1"), "nodes[0].id", "reserved"),
    ("unknown role", _set("nodes.2.role", "clinic"), "nodes[2].role",
     "hospital, pharmacy, regulator"),
    ("unknown role in count form", _set("nodes", {"hospital": 3, "clinic": 1}), "nodes.clinic",
     "hospital, pharmacy, regulator"),
    ("bad nodes form", _set("nodes", "four"), "nodes", "a count such as 4"),
    ("unknown fault target", _set("faults.0.crash", "hospital-9"), "faults[0].crash",
     "known nodes: hospital-1, hospital-2, pharmacy-1, regulator-1"),
    ("unknown fault kind", _set("faults.0", {"at": "3s", "explode": "hospital-1"}),
     "faults[0].explode", "allowed actions: crash, recover, partition, isolate, heal, link"),
    ("bad partition groups", _set("faults.0", {"at": "3s", "partition": "hospital-1"}),
     "faults[0].partition", "two groups or more"),
    ("two fault actions", _set("faults.0", {"at": "3s", "crash": "a", "recover": "b"}),
     "faults[0]", "one action per fault"),
    ("fault without time", _set("faults.1", {"recover": "hospital-1"}), "faults[1].at",
     "every fault needs a time"),
    ("fault with an unknown parameter", _set("faults.1.factor", "9"), "faults[1].factor",
     "allowed: at, until, recover"),
    ("until before at", _set("faults.0.until", "1s"), "faults[0].until", "must be after at"),
    ("fault after end", _set("faults.1.at", "16s"), "faults[1].at",
     "from 0s to 15s (duration 10s + drain 5s)"),
    ("faults not a list", _set("faults", {"at": "1s", "crash": "hospital-1"}), "faults",
     "a list of faults"),
    ("outstanding and rate both given", _set("workload.rate", "200/s"), "workload",
     "either outstanding (closed loop"),
    ("bad rate", _set("workload", {"rate": "fast"}), "workload.rate", "such as 200/s"),
    ("bad op_size", _set("workload.op_size", "1kb"), "workload.op_size", "1KiB (1024 bytes)"),
    ("zero clients", _set("workload.clients", 0), "workload.clients", "whole number >= 1"),
    ("watermark < checkpoint interval", _set("protocol.watermark_window", 100),
     "protocol.watermark_window", "must be >= checkpoint_interval (128)"),
    ("bad batch size", _set("protocol.batch_size", "ten"), "protocol.batch_size",
     "whole number >= 1"),
    ("unknown link endpoint", _set("network.links.0.between", ["hospital-1", "nurse-1"]),
     "network.links[0].between[1]", "known nodes: hospital-1"),
    ("unknown client endpoint", _set("network.links.1.from", "client-2"),
     "network.links[1].from", "clients: client-1 .. client-1"),
    ("link with both forms", _set("network.links.1.between", ["hospital-1", "pharmacy-1"]),
     "network.links[1]", "not both forms"),
    ("link without overrides", _set("network.links.0", {"between": ["hospital-1", "pharmacy-1"]}),
     "network.links[0]", "at least one of latency, bandwidth, loss"),
    ("bad cpu", _set("cpu", "fast"), "cpu", "none, default, or a mapping"),
    ("unknown cpu cost", _set("cpu", {"hash": "1us"}), "cpu.hash",
     "allowed: message, byte, sign, verify, mac, digest"),
    ("bad expectation", _set("expect.safety", "maybe"), "expect.safety", "true or false"),
    ("unknown expectation", _set("expect.throughput", 100), "expect.throughput",
     "allowed: safety, liveness"),
    ("missing name", lambda d: d.pop("name"), "name", "missing required field"),
    ("name not text", _set("name", 12), "name", "expected a name of 1-64 letters"),
]


@pytest.mark.parametrize(("mutate", "field", "hint"),
                         [case[1:] for case in BAD_CASES], ids=[case[0] for case in BAD_CASES])
def test_bad_input_names_file_field_and_allowed(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], None], field: str, hint: str
) -> None:
    data = base()
    mutate(data)
    path = write(tmp_path, data, "bad-scenario.yaml")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    err = info.value
    text = str(err)
    assert err.source == str(path)
    assert field in [p.field for p in err.problems], text
    line = next(line for line in text.splitlines() if f": {field}: " in line)
    assert line.startswith(f"{path}: {field}: ")
    assert hint in line, text
    assert "Traceback" not in text and "pydantic" not in text and "Input should" not in text


def test_several_problems_are_reported_one_per_line(tmp_path: Path) -> None:
    data = base()
    data["duration"] = "fast"
    data["network"]["loss"] = 2
    data["network"]["jitter"] = "1ms"
    data["colour"] = "blue"
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, data))
    fields = [p.field for p in info.value.problems]
    assert set(fields) == {"duration", "network.loss", "network.jitter", "colour"}
    assert len(str(info.value).splitlines()) == 4
    assert info.value.field == fields[0] and info.value.message == info.value.problems[0].message


def test_yaml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nduration: 1s\nnodes: [\n  a: b: c\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and "line 4, column" in text and "invalid YAML" in text


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nduration: 1s\nnodes: 4\nduration: 2s\n")
    with pytest.raises(ScenarioError, match=r"line 4, column 1: .*duplicate key 'duration'"):
        load_scenario(path)


def test_missing_file(tmp_path: Path) -> None:
    write(tmp_path, BASELINE, "baseline.yaml")
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ScenarioError) as info:
        load_scenario(missing)
    text = str(info.value)
    assert text.startswith(f"{missing}: file not found")
    assert "baseline.yaml" in text  # lists what is there


@pytest.mark.parametrize(("content", "expected"), [
    ("", "the file is empty"),
    ("- name: x\n", "expected a mapping of scenario fields"),
])
def test_file_that_is_not_a_mapping(tmp_path: Path, content: str, expected: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(ScenarioError, match=expected):
        load_scenario(path)


def test_parse_scenario_uses_the_given_source() -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(minimal(nodes=2), "from-the-cli")
    assert str(info.value).startswith("from-the-cli: nodes: ")


def test_scenario_error_survives_pickling() -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(minimal(duration="x", seed=-1), "m")
    clone = pickle.loads(pickle.dumps(info.value))
    assert clone.problems == info.value.problems and str(clone) == str(info.value)


# ---------------------------------------------------------------------------------------------
# Overrides


def test_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, BASELINE)
    s = load_scenario(path, [
        "protocol.batch_size=10",
        "nodes=7",
        "network.latency=20ms",
        "faults.1.at=2s",
        "workload.clients=3",
        "network.links[1].from=client-3",
    ])
    assert s.protocol.batch_size == 10
    assert s.n == 7 and s.f == 2
    assert s.network.latency.value_ns == 20 * MS
    assert [(f.at_ns, type(f).__name__) for f in s.faults] == [
        (2 * S, "RecoverFault"), (3 * S, "CrashFault")]
    assert s.network.links[1].src == "client-3"
    assert load_scenario(path).protocol.batch_size == 1  # the file itself is untouched


def test_override_values_are_yaml(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, BASELINE), [
        "network.latency={dist: normal, mean: 10ms, std: 2ms}",
        "cpu={sign: 16us}",
        "expect.liveness=false",
        "faults.2={at: 7s, crash: pharmacy-1}",  # one past the end appends
    ])
    assert s.network.latency.dist == "normal" and s.network.latency.std_ns == 2 * MS
    assert s.cpu == CpuSpec(sign="16us")
    assert s.expect.liveness is False
    assert len(s.faults) == 3


def test_override_creates_missing_sections() -> None:
    raw = minimal()
    out = apply_overrides(raw, ["protocol.batch_size=4"])
    assert out["protocol"] == {"batch_size": 4} and "protocol" not in raw


@pytest.mark.parametrize(("override", "field", "hint"), [
    ("faults.5.at=2s", "faults[5].at", "expected an index from 0 to 1"),
    ("name.first=x", "name.first", "not a mapping or list"),
    ("protocol.batchsize=10", "protocol.batchsize", "did you mean 'batch_size'?"),
    ("protocl.batch_size=10", "protocl", "allowed: name, description"),
    ("nodes.hospital=3", "nodes.hospital", "nodes is a list of 4 item(s); expected an index"),
    ("nodes=7 nodes.hospital=3", "nodes.hospital", "nodes is 7, not a mapping or list"),
])
def test_bad_override_path(tmp_path: Path, override: str, field: str, hint: str) -> None:
    path = write(tmp_path, BASELINE, "base.yaml")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path, override.split())
    line = next(line for line in str(info.value).splitlines() if f": {field}: " in line)
    assert line.startswith(f"{path}: {field}: ")
    assert hint in line


@pytest.mark.parametrize("override", ["protocol.batch_size", "=3", "a..b=1", "x.=1"])
def test_malformed_override(tmp_path: Path, override: str) -> None:
    with pytest.raises(ScenarioError, match=r"expected dotted\.path=value"):
        load_scenario(write(tmp_path, BASELINE), [override])


def test_override_that_makes_the_scenario_invalid_is_blamed(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, BASELINE), ["protocol.watermark_window=10"])
    assert "(set by override 'protocol.watermark_window=10')" in str(info.value)


# ---------------------------------------------------------------------------------------------
# Canonical form and hash


def test_to_dict_is_json_and_round_trips(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, BASELINE), ["cpu={byte: 0.5ns, mac: 1.3us}"])
    d = to_dict(s)
    json.dumps(d, allow_nan=False)
    assert d["duration"] == "10s" and d["network"]["bandwidth"] == "1Gbps"
    assert d["network"]["latency"] == {"dist": "constant", "value": "10ms"}
    assert d["network"]["links"][0] == {"between": ["hospital-1", "regulator-1"],
                                        "latency": {"dist": "constant", "value": "40ms"}}
    assert d["network"]["links"][1] == {"from": "client-1", "to": "hospital-1", "loss": 0.1}
    assert d["cpu"] == {"byte": "0.5ns", "mac": "1300ns"}
    assert d["faults"][0] == {"at": "3s", "crash": "hospital-1"}
    assert parse_scenario(d, "again") == s
    assert scenario_hash(parse_scenario(d, "again")) == scenario_hash(s)


def test_a_key_value_scenario_round_trips_without_the_ledger_s_fields(tmp_path: Path) -> None:
    # The parser refuses the ledger's workload fields for app: kv, so the canonical form
    # (a run's scenario.yaml, a sweep point) must leave them out, defaults included.
    s = parse_scenario(minimal(workload={"app": "kv", "clients": 2, "outstanding": 3}), "kv")
    d = to_dict(s)
    assert d["workload"] == {"clients": 2, "outstanding": 3, "op_size": 64, "app": "kv"}
    assert parse_scenario(d, "again") == s
    saved = tmp_path / "scenario.yaml"
    saved.write_text(yaml.safe_dump(d))
    assert load_scenario(saved) == s
    # The ledger keeps them.
    ledger = to_dict(parse_scenario(minimal(), "ledger"))
    assert ledger["workload"]["flow"] == "mixed" and ledger["workload"]["invalid"] == 0.02


def test_every_drawn_swarm_scenario_round_trips() -> None:
    # The swarm's scenarios cover both apps, every fault kind and Byzantine behaviour: each
    # comes back from its canonical form unchanged (what a run's scenario.yaml and a sweep
    # point rely on).
    from medbft.fuzz import draw_scenario

    for seed in range(60):
        for app in ("kv", "ledger"):
            s = parse_scenario(draw_scenario(seed, 4 + 3 * (seed % 2), app=app), "drawn")
            assert parse_scenario(to_dict(s), "again") == s, (seed, app)


def test_to_dict_cpu_none_and_count_nodes() -> None:
    d = to_dict(parse_scenario(minimal(), "m"))
    assert d["cpu"] == "none"
    assert d["nodes"][0] == {"id": "hospital-1", "role": "hospital"}
    assert list(d) == ["name", "description", "seed", "duration", "drain", "nodes", "network",
                       "protocol", "cpu", "workload", "faults", "expect"]


def test_hash_same_content_same_hash(tmp_path: Path) -> None:
    a = load_scenario(write(tmp_path, BASELINE, "a.yaml"))
    b = load_scenario(write(tmp_path, BASELINE, "b.yaml"))
    assert scenario_hash(a) == scenario_hash(b)
    canonical = json.dumps(to_dict(a), sort_keys=True, separators=(",", ":"))
    assert scenario_hash(a) == hashlib.sha256(canonical.encode()).hexdigest()
    assert scenario_hash(a) != scenario_hash(base() | {"name": "other"})
    assert scenario_hash(base()) == scenario_hash(a)  # raw mappings are accepted too


def test_hash_ignores_spelling_but_not_meaning() -> None:
    explicit = minimal(nodes=[{"id": "hospital-1", "role": "hospital"},
                              {"id": "pharmacy-1", "role": "pharmacy"},
                              {"id": "regulator-1", "role": "regulator"},
                              {"id": "hospital-2", "role": "hospital"}],
                       network={"latency": "10000us"})
    short = minimal(network={"latency": {"dist": "constant", "value": "10ms"}})
    assert scenario_hash(explicit) == scenario_hash(short)


@pytest.mark.parametrize("change", [
    _set("seed", 2),
    _set("network.latency", "11ms"),
    _set("protocol.batch_size", 2),
    _set("faults.0.at", "4s"),
    _set("description", "other words"),
    _set("cpu", "default"),
    _set("nodes.0.role", "pharmacy"),
])
def test_hash_changes_when_a_field_changes(change: Callable[[dict[str, Any]], None]) -> None:
    data = base()
    changed = copy.deepcopy(data)
    change(changed)
    assert scenario_hash(changed) != scenario_hash(data)


def test_hash_is_stable_across_processes(tmp_path: Path) -> None:
    path = write(tmp_path, BASELINE)
    code = ("import sys; from medbft.scenario import load_scenario, scenario_hash; "
            "print(scenario_hash(load_scenario(sys.argv[1])))")
    repo = Path(__file__).resolve().parents[1]
    hashes = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo), env.get("PYTHONPATH")]))
        out = subprocess.run([sys.executable, "-c", code, str(path)], env=env, check=True,
                             capture_output=True, text=True).stdout.strip()
        hashes.add(out)
    assert hashes == {scenario_hash(load_scenario(path))}


# ---------------------------------------------------------------------------------------------
# Package layout

#: The package's modules, each importing only modules before it (errors at the bottom).
LAYERS = ("errors", "fields", "base", "specs", "faults", "model", "loading", "canonical")


def test_package_exports_exactly_the_names_importers_use() -> None:
    import medbft.scenario as package

    assert package.__all__ == [
        "BEHAVIORS", "LEDGER_BEHAVIORS", "ByzantineFault", "CpuSpec", "CrashFault", "FaultSpec",
        "HealFault", "IsolateFault", "LatencySpec", "LinkFault", "PartitionFault",
        "RecoverFault", "RequestFault", "Scenario", "ScenarioError", "SlowFault", "TamperFault",
        "apply_overrides", "load_scenario", "parse_scenario", "scenario_hash", "to_dict",
    ]
    assert all(hasattr(package, name) for name in package.__all__)


def test_package_modules_import_only_modules_below_them() -> None:
    import ast

    folder = Path(__file__).resolve().parents[1] / "medbft" / "scenario"
    assert sorted(p.stem for p in folder.glob("*.py")) == sorted(("__init__", *LAYERS))
    for rank, name in enumerate(LAYERS):
        tree = ast.parse((folder / f"{name}.py").read_text(encoding="utf-8"))
        assert ast.get_docstring(tree), f"{name}.py opens without a docstring"
        imported = {node.module for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.module}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                     for alias in node.names}
        inside = {m.removeprefix("medbft.scenario.") for m in imported
                  if m == "medbft.scenario" or m.startswith("medbft.scenario.")}
        assert inside <= set(LAYERS[:rank]), f"{name}.py imports {sorted(inside)}"


# ---------------------------------------------------------------------------------------------
# Units


@pytest.mark.parametrize(("text", "ns"), [
    ("1.3us", 1300),
    ("10ms", 10_000_000),
    ("1s", 1_000_000_000),
    ("1.5s", 1_500_000_000),
    ("2m", 120_000_000_000),
    ("250ns", 250),
    ("1µs", 1000),
    ("1μs", 1000),
    ("10 ms", 10_000_000),
    ("1.1us", 1100),
    ("0.4ns", 0),
    ("0.5ns", 1),
    ("1e3ns", 1000),
    ("0", 0),
    (0, 0),
    ("0ms", 0),
])
def test_parse_duration(text: str | int, ns: int) -> None:
    assert parse_duration_ns(text) == ns


@pytest.mark.parametrize("bad", ["10", 10, 1.5, "fast", "10sec", "-5ms", "ms", "", True, None,
                                 "1h", float("inf")])
def test_parse_duration_rejects(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"such as 10ms|add a unit|cannot be negative"):
        parse_duration_ns(bad)


def test_parse_duration_float_keeps_fractions() -> None:
    assert parse_duration_ns_float("0.5ns") == 0.5
    assert parse_duration_ns_float("1.3us") == 1300.0
    assert parse_duration_ns_float("2ns") == 2.0


@pytest.mark.parametrize(("ns", "text"), [
    (0, "0s"), (1300, "1300ns"), (10_000_000, "10ms"), (5_000_000_000, "5s"),
    (60_000_000_000, "1m"), (90_000_000_000, "90s"), (2_000, "2us"), (0.5, "0.5ns"),
    (1300.0, "1300ns"),
])
def test_format_duration_round_trips(ns: int | float, text: str) -> None:
    assert format_duration_ns(ns) == text
    parse = parse_duration_ns_float if isinstance(ns, float) else parse_duration_ns
    assert parse(text) == ns


@pytest.mark.parametrize(("text", "bps"), [
    ("1Gbps", 1_000_000_000),
    ("100Mbps", 100_000_000),
    ("1.5Mbps", 1_500_000),
    ("1Kbps", 1000),
    ("1kbps", 1000),
    ("64bps", 64),
    ("2Tbps", 2_000_000_000_000),
])
def test_parse_bandwidth(text: str, bps: int) -> None:
    assert parse_bandwidth_bps(text) == bps
    assert parse_bandwidth_bps(format_bandwidth_bps(bps)) == bps


@pytest.mark.parametrize("bad", ["1000", 1000, "1GB/s", "0bps", "-1Mbps", "fast"])
def test_parse_bandwidth_rejects(bad: Any) -> None:
    with pytest.raises(ValueError, match="Mbps"):
        parse_bandwidth_bps(bad)


@pytest.mark.parametrize(("text", "rate"), [
    ("200/s", 200.0), ("200", 200.0), (200, 200.0), (12.5, 12.5), ("12000/min", 200.0),
    ("3600/h", 1.0), ("2/ms", 2000.0), (" 200 / s ", 200.0),
])
def test_parse_rate(text: str | float, rate: float) -> None:
    assert parse_rate_per_s(text) == rate


@pytest.mark.parametrize("bad", ["fast", "5/day", "x/s", "-1/s", "200/s/s", True])
def test_parse_rate_rejects(bad: Any) -> None:
    with pytest.raises(ValueError, match="such as 200/s"):
        parse_rate_per_s(bad)


@pytest.mark.parametrize(("text", "size"), [
    ("64", 64), (64, 64), ("64B", 64), ("1KB", 1000), ("1kB", 1000), ("1KiB", 1024),
    ("1.5KiB", 1536), ("2MB", 2_000_000), ("1MiB", 1 << 20), ("1GiB", 1 << 30), (0, 0),
])
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size_bytes(text) == size


@pytest.mark.parametrize("bad", ["1.5B", "1kb", "-1B", "big", 1.5, False])
def test_parse_size_rejects(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"1KiB \(1024 bytes\)"):
        parse_size_bytes(bad)
