"""node/config.py: the one list of protocol parameters, `Config` built from it, and every other
place that sets the parameters (scenario schema, network.json, `keys`/`cluster` options, the
simulator) reading that list."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from medbft.cli.cluster import spec_from_scenario
from medbft.cli.keys import PROTOCOL_HELP, parse_protocol
from medbft.errors import UsageError
from medbft.scenario import ScenarioError, parse_scenario
from medbft.scenario.specs import ProtocolSpec
from node.config import BY_ATTR, BY_NAME, PARAMETERS, SCENARIO_PARAMETERS, Config, Parameter
from node.netdir import (
    DEFAULT_PROTOCOL,
    NetworkDir,
    NetworkError,
    default_node_ids,
    init_network,
    network_key,
    protocol_block,
)
from sim.run import _Run


def test_defaults_are_unchanged() -> None:
    assert dataclasses.asdict(Config()) == {
        "batch_size": 1, "batch_timeout_ns": 0, "max_in_flight": 16,
        "checkpoint_interval": 128, "watermark_window": 256,
        "view_change_timeout_ns": 500_000_000, "fetch_timeout_ns": 100_000_000,
        "retransmit_timeout_ns": 100_000_000, "max_pending_requests": 100_000,
        "max_buffered_messages": 8192, "durable": False, "durable_snapshot_every": 8,
    }
    assert BY_NAME["client_timeout"].default == 1_000_000_000


def test_config_fields_are_the_replica_side_of_the_table() -> None:
    replica_side = [p.attr for p in PARAMETERS if p.side == "replica"]
    assert [f.name for f in dataclasses.fields(Config)] == replica_side
    assert [p.name for p in PARAMETERS if p.side == "client"] == ["client_timeout"]
    for p in PARAMETERS:
        assert p.unit in ("ns", "count", "bool") and p.doc
        assert (p.unit == "ns") == p.attr.endswith("_ns")
        if p.side == "replica":
            assert getattr(Config(), p.attr) == p.default


# -- The one list drives the others -----------------------------------------------------------
# A parameter in SCENARIO_PARAMETERS is settable in a scenario's protocol: block, by `keys init
# --protocol` / `cluster --protocol`, in network.json, and reaches the replicas: each test below
# loops over the table, so a parameter added to it is covered without touching this file.


def _other(p: Parameter) -> int | bool:
    """A valid value of `p` that is not its default (and keeps window >= checkpoint)."""
    if p.unit == "bool":
        return not p.default
    step = 1_000_000 if p.unit == "ns" else 1
    return p.default + step if p.high is None or p.default + step <= p.high else p.default - step


def _text(p: Parameter, value: int | bool) -> str:
    """`value` as written in a scenario or on the command line."""
    if p.unit == "bool":
        return str(value).lower()
    return f"{value // 1_000_000}ms" if p.unit == "ns" else str(value)


def _yaml(p: Parameter, text: str) -> object:
    """`text` as YAML would read it in a scenario's protocol block (a bare number is one)."""
    return int(text) if p.unit == "count" else text == "true" if p.unit == "bool" else text


def _out_of_bounds(p: Parameter) -> list[str]:
    out = []
    if p.low is not None:
        out.append(f"{p.low - 1}" if p.unit == "count" else "0s" if p.low == 1 else "-1ms")
    if p.high is not None:
        out.append(f"{p.high + 1}" if p.unit == "count" else f"{p.high + 1}ns")
    return out


def _scenario(protocol: dict[str, object]) -> dict[str, object]:
    return {"name": "params", "duration": "1s", "nodes": 4, "network": {"latency": "1ms"},
            "workload": {"app": "kv"}, "protocol": protocol}


OTHER = {p.attr: _other(p) for p in SCENARIO_PARAMETERS}
ITEMS = [f"{p.name}={_text(p, OTHER[p.attr])}" for p in SCENARIO_PARAMETERS]
WRITTEN = {p.name: _yaml(p, _text(p, OTHER[p.attr])) for p in SCENARIO_PARAMETERS}


def test_scenario_parameters_are_the_table_rows_marked_scenario() -> None:
    assert tuple(p for p in PARAMETERS if p.scenario) == SCENARIO_PARAMETERS
    assert {p.name for p in SCENARIO_PARAMETERS} >= {"batch_size", "client_timeout"}


def test_the_scenario_schema_is_the_table() -> None:
    fields = ProtocolSpec.model_fields
    assert list(fields) == [p.attr for p in SCENARIO_PARAMETERS]
    spec = ProtocolSpec()
    for p in SCENARIO_PARAMETERS:
        assert (fields[p.attr].alias or p.attr) == p.name
        assert getattr(spec, p.attr) == p.default, p.name
    given = parse_scenario(_scenario(WRITTEN), "p.yaml")
    assert given.protocol.model_dump() == OTHER
    assert Config.from_mapping(ProtocolSpec().model_dump()) == Config()


@pytest.mark.parametrize(("name", "value"), [(p.name, v) for p in SCENARIO_PARAMETERS
                                             for v in _out_of_bounds(p)])
def test_the_scenario_schema_enforces_the_bounds(name: str, value: str) -> None:
    p = BY_NAME[name]
    with pytest.raises(ScenarioError) as info:
        parse_scenario(_scenario({name: _yaml(p, value)}), "p.yaml")
    message = str(info.value)
    assert f"protocol.{name}: " in message
    if p.unit == "count":
        assert f">= {p.low}" in message and (p.high is None or f"<= {p.high}" in message)
    elif value.endswith("ns"):
        assert "must be at most" in message
    elif p.low:
        assert "must be greater than 0" in message
    assert "e.g." in message or "such as" in message


def test_bad_scenario_values_stay_explained() -> None:
    with pytest.raises(ScenarioError, match=re.escape(
            "protocol.batch_size: expected a whole number >= 1 and <= 65536, e.g. 16; "
            "got 'ten'")):
        parse_scenario(_scenario({"batch_size": "ten"}), "p.yaml")
    with pytest.raises(ScenarioError, match=re.escape(
            "protocol.view_change_timeout: must be greater than 0; expected a duration such "
            "as 500ms; got '0s'")):
        parse_scenario(_scenario({"view_change_timeout": "0s"}), "p.yaml")
    with pytest.raises(ScenarioError, match="unknown field 'batchsize'; did you mean "
                                            "'batch_size'"):
        parse_scenario(_scenario({"batchsize": 4}), "p.yaml")


def test_keys_parser_takes_every_parameter_and_its_bounds() -> None:
    block = parse_protocol(ITEMS)
    assert set(block) == {network_key(p) for p in SCENARIO_PARAMETERS} == set(DEFAULT_PROTOCOL)
    assert block == protocol_block(OTHER)
    for p in SCENARIO_PARAMETERS:
        assert p.name in PROTOCOL_HELP
        for value in _out_of_bounds(p):
            with pytest.raises(UsageError, match=f"--protocol {p.name}: "):
                parse_protocol([f"{p.name}={value}"])
    with pytest.raises(UsageError, match="unknown parameter 'batch_timeout_ms'; known: "
                                         "batch_size, batch_timeout"):
        parse_protocol(["batch_timeout_ms=5"])


def test_every_parameter_round_trips_through_the_network_directory(tmp_path: Path) -> None:
    defaults = init_network(tmp_path / "d", default_node_ids(4), clients=1, state_machine="kv")
    assert defaults.protocol_values() == {p.attr: p.default for p in SCENARIO_PARAMETERS}
    assert defaults.config() == Config(durable=True)
    net = init_network(tmp_path / "n", default_node_ids(4), clients=1, state_machine="kv",
                       protocol=parse_protocol(ITEMS))
    written = json.loads((tmp_path / "n" / "network.json").read_text())["protocol"]
    assert set(written) == {network_key(p) for p in SCENARIO_PARAMETERS}
    loaded = NetworkDir.load(net.path)
    assert loaded.protocol_values() == OTHER
    assert loaded.config(durable=False) == Config.from_mapping(OTHER)
    assert loaded.client_timeout_ns == OTHER["client_timeout_ns"]


@pytest.mark.parametrize(("key", "value", "message"), [
    ("batch_size", 0, "batch_size must be >= 1; got 0"),
    ("batch_size", 2.5, "batch_size must be an integer; got 2.5"),
    ("view_change_timeout_ms", "soon", "view_change_timeout_ms must be a number of "
                                       "milliseconds; got 'soon'"),
    ("client_timeout_ms", 0, "client_timeout_ns must be >= 1; got 0"),
])
def test_a_bad_network_json_names_the_parameter(tmp_path: Path, key: str, value: object,
                                                message: str) -> None:
    init_network(tmp_path, default_node_ids(4), clients=1, state_machine="kv")
    path = tmp_path / "network.json"
    settings = json.loads(path.read_text())
    settings["protocol"][key] = value
    path.write_text(json.dumps(settings))
    with pytest.raises(NetworkError, match=re.escape(f"bad protocol block: {message}")):
        NetworkDir.load(tmp_path)


def test_cluster_and_simulator_take_every_parameter_from_the_scenario(tmp_path: Path) -> None:
    raw = _scenario(WRITTEN)
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps(raw))  # JSON is YAML
    args = argparse.Namespace(transport="http", broker=None, sync="normal", out=tmp_path,
                              app=None, emulate_latency=False)
    spec, _ = spec_from_scenario(str(path), args)
    assert spec.protocol == parse_protocol(ITEMS)
    run = _Run(parse_scenario(raw, "s.yaml"), 1, False)  # wired, not run
    try:
        assert {r.config for r in run.replicas.values()} == {Config.from_mapping(OTHER)}
    finally:
        run.loop.close()


def test_a_parameter_added_to_the_table_appears_everywhere() -> None:
    """Add a client-side parameter to PARAMETERS before anything reads it (in a fresh
    interpreter): the scenario schema, keys' parser and network.json all take it."""
    script = textwrap.dedent("""
        import node.config as c
        extra = c.Parameter("probe_timeout", "probe_timeout_ns", "ns", 7_000_000, 1, None,
                            "a parameter added for the test", side="client")
        c.PARAMETERS = (*c.PARAMETERS, extra)
        c.SCENARIO_PARAMETERS = (*c.SCENARIO_PARAMETERS, extra)
        c.BY_NAME[extra.name] = c.BY_ATTR[extra.attr] = extra
        from medbft.cli.keys import PROTOCOL_HELP, parse_protocol
        from medbft.scenario import ScenarioError, parse_scenario
        from node.netdir import DEFAULT_PROTOCOL
        raw = {"name": "x", "duration": "1s", "nodes": 4, "network": {"latency": "1ms"},
               "protocol": {"probe_timeout": "9ms"}}
        assert parse_scenario(raw, "x").protocol.probe_timeout_ns == 9_000_000
        raw["protocol"] = {"probe_timeout": "0s"}
        try:
            parse_scenario(raw, "x")
        except ScenarioError as exc:
            assert "protocol.probe_timeout: must be greater than 0" in str(exc), exc
        else:
            raise AssertionError("0s accepted")
        assert DEFAULT_PROTOCOL["probe_timeout_ms"] == 7
        assert parse_protocol(["probe_timeout=9ms"]) == {"probe_timeout_ms": 9}
        assert "probe_timeout" in PROTOCOL_HELP
        print("ok")
    """)
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=root, env=env, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"batch_size": 0}, "batch_size must be >= 1; got 0"),
    ({"batch_size": 65_537}, "batch_size must be <= 65536; got 65537"),
    ({"batch_timeout_ns": -1}, "batch_timeout_ns must be >= 0; got -1"),
    ({"view_change_timeout_ns": 0}, "view_change_timeout_ns must be >= 1; got 0"),
    ({"watermark_window": 64, "checkpoint_interval": 128},
     "watermark_window must be >= checkpoint_interval (128); got 64"),
    ({"max_in_flight": 2.5}, "max_in_flight must be an integer; got 2.5"),
    ({"max_in_flight": True}, "max_in_flight must be an integer; got True"),
    ({"durable": 1}, "durable must be true or false; got 1"),
])
def test_out_of_bounds_values_name_the_parameter_and_bound(kwargs: dict[str, object],
                                                          message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Config(**kwargs)  # type: ignore[arg-type]


def test_from_mapping_by_attribute_names() -> None:
    cfg = Config.from_mapping({"batch_size": 8, "view_change_timeout_ns": 300_000_000,
                               "client_timeout_ns": 600_000_000})
    assert cfg == Config(batch_size=8, view_change_timeout_ns=300_000_000)
    assert Config.from_mapping(ProtocolSpec().model_dump()) == Config()
    with pytest.raises(ValueError, match=r"unknown protocol parameter.*batch_timeout"):
        Config.from_mapping({"batch_timeout": 5})
    with pytest.raises(ValueError, match="max_in_flight must be >= 1"):
        Config.from_mapping({"max_in_flight": 0})
    assert set(BY_ATTR) == {p.attr for p in PARAMETERS}
