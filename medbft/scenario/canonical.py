"""The canonical form of a scenario and its content hash, so results record exactly what ran.

A results folder keeps the scenario as run (``scenario.yaml``) and sweeps skip points already
run; both need one spelling per meaning. ``to_dict`` writes a ``Scenario`` back in the file
format with every value normalised (``10000us`` -> ``10ms``, ``nodes: 4`` -> the explicit list),
and ``scenario_hash`` digests that form. This module is the top of the package: it only reads
validated models (and validates raw mappings through ``loading``), never adds rules of its own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from medbft.scenario.loading import parse_scenario
from medbft.scenario.model import Scenario
from medbft.scenario.specs import LEDGER_ONLY

__all__ = ["scenario_hash", "to_dict"]


def to_dict(scenario: Scenario) -> dict[str, Any]:
    """A JSON-able, normalised form of ``scenario`` for results files.

    It uses the file format itself, so ``parse_scenario(to_dict(s))`` gives back ``s``:
    durations are canonical strings in the largest exact unit ('10ms', '1300ns', '0s'; CPU costs
    may be fractional, '0.5ns'), bandwidth likewise ('1Gbps'), sizes are integer bytes, rates
    float per second, nodes an explicit list of {id, role}, latency always the mapping form
    {dist, ...}, links use between/from-to, cpu is 'none' or a mapping of the costs given,
    unset optional values are omitted, and so are the ledger's workload fields for the
    key-value app (they do not apply, and the parser refuses them there).
    """
    out: dict[str, Any] = scenario.model_dump(mode="json", by_alias=True, exclude_none=True)
    if out["workload"].get("app") == "kv":
        for key in LEDGER_ONLY:
            out["workload"].pop(key, None)
    links = out["network"]["links"]
    for i, link in enumerate(links):
        links[i] = _link_form(link)
    for fault in out["faults"]:
        if "link" in fault:
            fault["link"] = _link_form(fault["link"])
    if scenario.cpu is None:
        out = {key: "none" if key == "cpu" else out[key] for key in Scenario._input_keys(None)}
    return out


def _link_form(link: dict[str, Any]) -> dict[str, Any]:
    if link.pop("both"):
        return {"between": [link.pop("from"), link.pop("to")], **link}
    return link


def scenario_hash(scenario_or_raw: Scenario | Mapping[str, Any]) -> str:
    """SHA-256 hex digest of the canonical JSON of the validated, normalised scenario.

    Equivalent spellings (``nodes: 4`` vs the explicit list, ``10ms`` vs ``10000us``) hash the
    same; every field, including name and description, is covered.
    """
    scenario = (scenario_or_raw if isinstance(scenario_or_raw, Scenario)
                else parse_scenario(scenario_or_raw, "<scenario>"))
    canonical = json.dumps(to_dict(scenario), sort_keys=True, separators=(",", ":"),
                           ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()
