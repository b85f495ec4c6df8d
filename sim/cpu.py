"""The per-node CPU model: what processing and cryptography cost, in virtual time.

Why this exists: in a real deployment a replica's CPU is a queue. Signature checks, MACs over
O(n) authenticators and per-message handling decide throughput long before the network does
(OSDI '99 §7; the per-node load formulas in docs/design.md#per-node-load). The simulator
charges each step of a replica by the operations the core counted while taking it
(`node.crypto.Costs`): messages handled, bytes received, signatures, verifications, MACs and
digests, each at a per-operation cost.

`cpu: none` in a scenario turns the model off (everything free, so latency is pure network).

Two optional fields describe the machine rather than an operation:

* `cores: K`: all replicas share one machine with K cores, as a cluster on one host does (the
  loopback runs of `medbft cluster` and `bench/compare.py`). A replica's step then waits for a
  free core as well as for its own CPU, and waiting replicas get cores in the order they asked
  (`node.runtime.Cores`). Without it each replica has a core of its own, which is right for
  one replica per machine and wrong for four replicas and a load generator on two cores: there
  the replicas of a multicast phase queue for the cores, which is most of the gap between a
  simulated and a real loopback run.
* `client: T`: the load generator's CPU, T per reply a client handles (its share of building,
  signing and sending the request and of checking the replies), on one CPU that all clients
  share (one load-generator process) and, with `cores`, on the same cores as the replicas.
  `bench/calibrate.py --real` measures both.

And one optional pair describes what the operations cannot: a process that, for a while, does
nothing of its own (descheduled for another process or the kernel, collecting garbage,
faulting a page).

* `pause: T` and `pause_chance: P`: after each step a process takes (a replica's, and the load
  generator's when `client` is set), with chance P, it pauses for a time drawn from an
  exponential distribution of mean T. The pause keeps its processor busy and, with `cores`,
  one core too (the other work it waits for runs there); a node slowed by a fault pauses
  longer, as its whole step is scaled. The draws come from a stream per process derived from
  the run's seed (`medbft:SEED:cpu:NODE`, and `medbft:SEED:cpu-clients` for the clients' one
  load generator), so a seed still fixes the run. Pauses are what spreads a real loopback
  run's p99 far above its p50 while every operation costs the same each time:
  `bench/calibrate.py --real` fits P and T to a real run's latency percentiles. Unset, or a
  chance of 0: no pauses and no draws (a run reads exactly as before they existed).

DEFAULT_COSTS_NS were measured on this project's reference machine (2-core x86_64 VM,
Python 3.11, cryptography 48 / OpenSSL): ECDSA P-256 sign 17.5 us, verify 42.2 us,
HMAC-SHA256 of a small message 1.43 us, SHA-256 of 200 bytes 0.32 us; `message` is the
Python handling cost of one message in the replica core (decode, guards, bookkeeping)
measured with `bench/calibrate.py`, crypto excluded. Re-measure on your machine with
`python bench/calibrate.py` and put the figures in the scenario's `cpu:` mapping.

The `mac` figure is still the HMAC-SHA256 one: the MAC became keyed BLAKE2b (node.crypto),
which costs about half as much through `Keyring.mac`, and the default will move when it is
re-measured on the reference machine (changing it changes every `cpu: default` result).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["DEFAULT_COSTS_NS", "CpuCosts", "client_cost_model", "cost_model"]

DEFAULT_COSTS_NS: dict[str, float] = {
    "message": 20_000.0,
    "byte": 0.5,
    "sign": 17_500.0,
    "verify": 42_200.0,
    "mac": 1_430.0,
    "digest": 320.0,
    # Executing one request in the state machine. It depends on the app (a key-value put
    # costs little; a ledger transaction 20-50 us), so no default is charged:
    # `bench/calibrate.py --real` measures it for the app a scenario runs.
    "execute": 0.0,
}


@dataclass(frozen=True)
class CpuCosts:
    """Per-operation costs in nanoseconds (floats: a byte may cost half a nanosecond)."""

    message: float
    byte: float
    sign: float
    verify: float
    mac: float
    digest: float
    execute: float = 0.0
    cores: int | None = None
    """Cores the whole network shares (None: a core per replica)."""
    client: float = 0.0
    """Load-generator CPU per reply a client handles (0: clients cost nothing)."""
    pause: float = 0.0
    """Mean length of a pause (exponential), in nanoseconds."""
    pause_chance: float = 0.0
    """The chance that a step is followed by a pause (0: never, and no random draws)."""

    @property
    def pauses(self) -> bool:
        """Whether steps may pause (both a chance and a mean length above 0)."""
        return self.pause_chance > 0 and self.pause > 0

    @classmethod
    def from_spec(cls, spec: object | None) -> CpuCosts | None:
        """None for `cpu: none`; defaults for each field the scenario leaves unset."""
        if spec is None:
            return None
        values = {}
        for name, default in DEFAULT_COSTS_NS.items():
            given = getattr(spec, f"{name}_ns", None)
            values[name] = float(default if given is None else given)
        client = getattr(spec, "client_ns", None)
        pause = getattr(spec, "pause_ns", None)
        chance = getattr(spec, "pause_chance", None)
        return cls(**values, cores=getattr(spec, "cores", None),
                   client=0.0 if client is None else float(client),
                   pause=0.0 if pause is None else float(pause),
                   pause_chance=0.0 if chance is None else float(chance))

    def as_dict(self) -> dict[str, float]:
        """The costs (and `cores`, `client` and the pauses when set: runs without them read as
        before)."""
        out: dict[str, float] = {k: getattr(self, k) for k in DEFAULT_COSTS_NS}
        if self.cores is not None:
            out["cores"] = self.cores
        if self.client:
            out["client"] = self.client
        if self.pauses:
            out["pause"] = self.pause
            out["pause_chance"] = self.pause_chance
        return out


def _with_pauses(charge, costs: CpuCosts, rng: random.Random | None):  # type: ignore[no-untyped-def]
    """`charge`, plus a pause after a step with chance `costs.pause_chance` (exponential, mean
    `costs.pause`), drawn from `rng`; `charge` itself when the costs have no pauses."""
    if not costs.pauses:
        return charge
    if rng is None:
        raise ValueError("a CPU model with pauses needs a random stream (derived from the seed)")
    chance, rate = costs.pause_chance, 1.0 / costs.pause
    draw, length = rng.random, rng.expovariate

    def charge_with_pauses(before: tuple[int, ...], after: tuple[int, ...]) -> int:
        cost: int = charge(before, after)
        if draw() < chance:
            cost += round(length(rate))
        return cost

    return charge_with_pauses


def cost_model(costs: CpuCosts, rng: random.Random | None = None):  # type: ignore[no-untyped-def]
    """A `node.runtime.CostModel` charging the operations done between two counter snapshots
    (order: messages, bytes, sign, verify, mac, digest, execute), and the pauses, drawn from
    `rng`, when `costs` has them (one model, and one stream, per process).

    Written out field by field: it runs once per simulated step, and a loop over zipped
    tuples cost 6% of a 64-node run. The sum is the same float, built in the same order
    (only the counters that moved add a term)."""
    w_message, w_byte, w_sign, w_verify, w_mac, w_digest, w_execute = (
        costs.message, costs.byte, costs.sign, costs.verify, costs.mac, costs.digest,
        costs.execute)

    def charge(before: tuple[int, ...], after: tuple[int, ...]) -> int:
        # Unpacking checks both snapshots have the seven counters (ValueError otherwise).
        m0, b0, s0, v0, a0, g0, x0 = before
        m1, b1, s1, v1, a1, g1, x1 = after
        total = 0.0
        if m1 != m0:
            total += w_message * (m1 - m0)
        if b1 != b0:
            total += w_byte * (b1 - b0)
        if s1 != s0:
            total += w_sign * (s1 - s0)
        if v1 != v0:
            total += w_verify * (v1 - v0)
        if a1 != a0:
            total += w_mac * (a1 - a0)
        if g1 != g0:
            total += w_digest * (g1 - g0)
        if x1 != x0:
            total += w_execute * (x1 - x0)
        return round(total)

    return _with_pauses(charge, costs, rng)


def client_cost_model(costs: CpuCosts,  # type: ignore[no-untyped-def]
                      rng: random.Random | None = None):
    """A `node.runtime.CostModel` for a client: `costs.client` per step (a reply handled, or a
    retransmission timer), and the pauses, drawn from `rng`, when `costs` has them (the
    clients share one load generator, so one model and one stream for all)."""
    cost = round(costs.client)

    def charge(before: tuple[int, ...], after: tuple[int, ...]) -> int:
        return cost

    return _with_pauses(charge, costs, rng)
