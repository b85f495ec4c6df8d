"""node/config.py: the one list of protocol parameters, and `Config` built from it."""

from __future__ import annotations

import dataclasses
import re

import pytest

from medbft.scenario.specs import ProtocolSpec
from node.config import BY_ATTR, BY_NAME, PARAMETERS, Config
from node.netdir import DEFAULT_PROTOCOL


def test_defaults_are_unchanged() -> None:
    assert dataclasses.asdict(Config()) == {
        "batch_size": 1, "batch_timeout_ns": 0, "max_in_flight": 16,
        "checkpoint_interval": 128, "watermark_window": 256,
        "view_change_timeout_ns": 500_000_000, "fetch_timeout_ns": 100_000_000,
        "retransmit_timeout_ns": 100_000_000, "max_pending_requests": 100_000,
        "max_buffered_messages": 8192, "durable": False,
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


def test_other_lists_agree_with_the_table_until_they_read_it() -> None:
    spec = ProtocolSpec()
    scenario_side = [p for p in PARAMETERS if p.scenario]
    assert {p.attr for p in scenario_side} == set(ProtocolSpec.model_fields)
    for p in scenario_side:
        assert getattr(spec, p.attr) == p.default, p.name
        key = f"{p.name}_ms" if p.unit == "ns" else p.name
        assert DEFAULT_PROTOCOL[key] * (1_000_000 if p.unit == "ns" else 1) == p.default, key


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
