"""The scenario file format: what a simulation run is, as researchers write it in YAML.

A scenario says which nodes run PBFT, how the network between them behaves, how the clients load
the system, which faults to inject and what the run is expected to show. Researchers write these
files by hand, so this package exists to turn a file into one validated, immutable ``Scenario``
that the simulator can trust, and to turn every mistake into a one-line message that names the
file, the field (dotted path such as ``network.links[0].latency``) and what is allowed -- never a
traceback. It also gives every scenario a canonical form (``to_dict``) and a content hash
(``scenario_hash``) so results can record exactly what was run.

File format (all durations take units ns/us/ms/s/m, see ``medbft.units``)::

    name: baseline                 # required, non-empty text
    description: ...               # optional text
    seed: 1                        # optional, integer >= 0, default 1
    duration: 10s                  # required, > 0: clients submit for this long ...
    drain: 5s                      # optional, default 5s: ... then the run drains this long
    nodes: 4                       # required, n >= 4; see ``model.expand_nodes`` (3 forms)
    network:                       # optional
      latency: 10ms                # default 0s; or {dist: constant|uniform|normal|lognormal|...}
      bandwidth: 1Gbps             # optional, default unlimited
      loss: 0.0                    # probability in [0, 1), also '1%'; default 0
      links:                       # optional per-link overrides (latency, bandwidth, loss)
        - {between: [hospital-1, regulator-1], latency: 40ms}   # both directions
        - {from: client-1, to: hospital-1, loss: 0.1}           # one direction
    protocol: {batch_size: 1, batch_timeout: 0ms, max_in_flight: 16, checkpoint_interval: 128,
               watermark_window: 256, view_change_timeout: 500ms, client_timeout: 1s}  # defaults
    cpu: none                      # default; or 'default', or {message, byte, sign, verify, mac,
                                   # digest, execute} costs such as {sign: 16us, byte: 0.5ns},
                                   # and the machine: cores (shared by all replicas), client
                                   # (load-generator CPU per reply); see sim/cpu.py
    workload: {clients: 1, outstanding: 1, op_size: 64B}   # defaults; or rate: 200/s instead of
                                   # outstanding (exactly one; neither means outstanding: 1);
                                   # app: ledger|kv, flow, mix, invalid, population, event_at,
                                   # home_gateway: the healthcare ledger's traffic (docs/ledger.md)
    faults:                        # optional list of single-action mappings, sorted by `at`
      - {at: 3s, crash: hospital-1}
      - {at: 6s, recover: hospital-1}
    expect: {safety: true, liveness: true}   # optional; null/absent means "not asserted"

A ``null`` value for a whole section (``network:``, ``faults:`` ...) means "use the defaults".
Latency distributions: ``constant {value}``, ``uniform {low, high}``, ``normal {mean, std}``,
``lognormal {mean, std}`` (mean and std of the delay itself, not of its logarithm) and
``exponential {mean}``.

Adding a fault kind: see the docstring of ``medbft.scenario.faults``.

The package, each module importing only those listed before it:

* ``errors``: ``ScenarioError`` (one ``Problem`` per line) and the helpers that word messages;
* ``fields``: leaf value types and their units (durations, probabilities, node ids, roles ...);
* ``base``: ``_Spec``, the base of every mapping (unknown keys, shorthands, null = default);
* ``specs``: the sections -- nodes, network and links, protocol, cpu, workload, expect;
* ``faults``: one model per fault action, their targets and Byzantine behaviours;
* ``model``: ``Scenario``, the node count forms and the checks spanning sections;
* ``loading``: YAML files, ``--set`` overrides, pydantic errors turned into problems;
* ``canonical``: ``to_dict`` and ``scenario_hash``.

Import the names below from ``medbft.scenario``; the modules are the package's inside.
"""

from medbft.scenario.canonical import scenario_hash, to_dict
from medbft.scenario.errors import ScenarioError
from medbft.scenario.faults import (
    BEHAVIORS,
    LEDGER_BEHAVIORS,
    ByzantineFault,
    CrashFault,
    FaultSpec,
    HealFault,
    IsolateFault,
    LinkFault,
    PartitionFault,
    RecoverFault,
    RequestFault,
    SlowFault,
    TamperFault,
)
from medbft.scenario.loading import apply_overrides, load_scenario, parse_scenario
from medbft.scenario.model import Scenario
from medbft.scenario.specs import CpuSpec, LatencySpec

__all__ = [
    "BEHAVIORS",
    "LEDGER_BEHAVIORS",
    "ByzantineFault",
    "CpuSpec",
    "CrashFault",
    "FaultSpec",
    "HealFault",
    "IsolateFault",
    "LatencySpec",
    "LinkFault",
    "PartitionFault",
    "RecoverFault",
    "RequestFault",
    "Scenario",
    "ScenarioError",
    "SlowFault",
    "TamperFault",
    "apply_overrides",
    "load_scenario",
    "parse_scenario",
    "scenario_hash",
    "to_dict",
]
