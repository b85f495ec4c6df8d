"""Tests for sim.network: per-link latency, loss, bandwidth queueing and determinism."""

from __future__ import annotations

import random
import statistics
from typing import Any

import pytest

from medbft.scenario import LatencySpec, Scenario, parse_scenario
from sim.network import LinkState, Network, latency_sampler

MS = 1_000_000
H1, P1, R1, H2 = "hospital-1", "pharmacy-1", "regulator-1", "hospital-2"
NODES = (H1, P1, R1, H2)
C1, C2 = "client-1", "client-2"


def scenario(network: dict[str, Any] | None = None, clients: int = 2) -> Scenario:
    raw: dict[str, Any] = {"name": "net", "duration": "1s", "nodes": 4,
                           "workload": {"clients": clients}}
    if network is not None:
        raw["network"] = network
    s = parse_scenario(raw)
    assert s.node_ids == NODES
    return s


def network(net: dict[str, Any] | None = None, seed: int = 1, clients: int = 2) -> Network:
    s = scenario(net, clients)
    return Network(s.node_ids, s.clients, s.network, random.Random(seed))


def delays(nw: Network, src: str, dst: str, count: int, nbytes: int = 100) -> list[int]:
    out = []
    for i in range(count):
        now = i * 1000 * MS  # far apart: no queueing even with a bandwidth limit
        arrival = nw.transmit(src, dst, nbytes, now)
        assert arrival is not None
        out.append(arrival - now)
    return out


def all_pairs(nw: Network) -> list[tuple[str, str]]:
    pairs = [(a, b) for a in nw.nodes for b in nw.nodes if a != b]
    pairs += [(c, r) for c in nw.clients for r in nw.nodes]
    pairs += [(r, c) for c in nw.clients for r in nw.nodes]
    return pairs


# ---------------------------------------------------------------------------------------------
# Latency and overrides


def test_default_network_is_zero_latency_lossless_unlimited() -> None:
    nw = network()
    for a, b in all_pairs(nw):
        assert nw.transmit(a, b, 10_000_000, 123) == 123


def test_constant_latency_is_exact_on_every_link() -> None:
    nw = network({"latency": "10ms"})
    pairs = all_pairs(nw)
    assert len(pairs) == 4 * 3 + 2 * 2 * 4
    for a, b in pairs:
        for now in (0, 7, 5 * MS):
            assert nw.transmit(a, b, 200, now) == now + 10 * MS


def test_constant_latency_mapping_form() -> None:
    nw = network({"latency": {"dist": "constant", "value": "1300us"}})
    assert nw.transmit(H1, P1, 1, 0) == 1_300_000


def test_one_direction_override() -> None:
    nw = network({"latency": "10ms", "links": [{"from": H1, "to": R1, "latency": "40ms"}]})
    assert nw.transmit(H1, R1, 100, 0) == 40 * MS
    assert nw.transmit(R1, H1, 100, 0) == 10 * MS
    assert nw.transmit(H1, P1, 100, 0) == 10 * MS
    assert nw.transmit(P1, R1, 100, 0) == 10 * MS


def test_between_override_applies_both_ways() -> None:
    nw = network({"latency": "10ms", "links": [{"between": [H1, R1], "latency": "40ms"}]})
    assert nw.transmit(H1, R1, 100, 0) == 40 * MS
    assert nw.transmit(R1, H1, 100, 0) == 40 * MS
    for a, b in all_pairs(nw):
        if {a, b} != {H1, R1}:
            assert nw.transmit(a, b, 100, 0) == 10 * MS, (a, b)


def test_later_override_wins_and_only_named_fields_change() -> None:
    nw = network({
        "latency": "10ms",
        "links": [
            {"between": [H1, P1], "latency": "40ms", "loss": 0.5},
            {"from": P1, "to": H1, "latency": "2ms"},
        ],
    })
    forward, backward = nw.link(H1, P1), nw.link(P1, H1)
    assert forward is not None and backward is not None
    assert forward.loss == 0.5 and backward.loss == 0.5
    assert forward.latency(random.Random()) == 40 * MS
    assert backward.latency(random.Random()) == 2 * MS
    other = nw.link(H1, R1)
    assert other is not None and other.loss == 0.0 and other.bandwidth_bps is None


def test_override_does_not_leak_into_other_links() -> None:
    nw = network({"latency": "10ms", "bandwidth": "1Gbps",
                  "links": [{"from": H1, "to": P1, "bandwidth": "1Mbps", "loss": 0.2}]})
    links = {pair: nw.link(*pair) for pair in all_pairs(nw)}
    assert all(isinstance(state, LinkState) for state in links.values())
    assert len({id(state) for state in links.values()}) == len(links)  # one state per link
    for pair, state in links.items():
        assert state is not None
        if pair == (H1, P1):
            assert (state.bandwidth_bps, state.loss) == (1_000_000, 0.2)
        else:
            assert (state.bandwidth_bps, state.loss) == (1_000_000_000, 0.0), pair


def test_client_links_get_default_latency() -> None:
    nw = network({"latency": "7ms"})
    for c in (C1, C2):
        for r in NODES:
            assert nw.transmit(c, r, 64, 0) == 7 * MS
            assert nw.transmit(r, c, 64, 0) == 7 * MS


def test_client_link_override() -> None:
    nw = network({"latency": "7ms", "links": [
        {"from": C1, "to": H1, "latency": "30ms"},
        {"between": [C2, R1], "latency": "50ms"},
    ]})
    assert nw.transmit(C1, H1, 64, 0) == 30 * MS
    assert nw.transmit(H1, C1, 64, 0) == 7 * MS
    assert nw.transmit(C1, P1, 64, 0) == 7 * MS
    assert nw.transmit(C2, R1, 64, 0) == 50 * MS
    assert nw.transmit(R1, C2, 64, 0) == 50 * MS
    assert nw.transmit(C2, H1, 64, 0) == 7 * MS


def test_unknown_pairs_return_none() -> None:
    nw = network({"latency": "10ms"})
    for a, b in [(H1, H1), (C1, C1), (C1, C2), (C2, C1), (H1, "nobody"), ("nobody", H1),
                 ("client-3", H1)]:
        assert nw.transmit(a, b, 100, 0) is None, (a, b)
        assert nw.link(a, b) is None
    # Unknown pairs draw no randomness.
    state = nw.rng.getstate()
    nw.transmit(H1, H1, 100, 0)
    assert nw.rng.getstate() == state


def test_graph_has_all_endpoints() -> None:
    nw = network()
    assert set(nw.graph.nodes) == set(NODES) | {C1, C2}
    assert nw.graph.nodes[H1]["kind"] == "replica"
    assert nw.graph.nodes[C1]["kind"] == "client"
    assert nw.graph.number_of_edges() == len(all_pairs(nw))


def test_graph_carries_the_links_the_simulator_uses() -> None:
    """`graph` is built on demand from the links `transmit` reads: the same LinkState
    objects, overrides included, in the order networkx kept when it held them."""
    nw = network({"latency": "10ms",
                  "links": [{"between": [R1, H1], "latency": "40ms"}]})
    g = nw.graph
    assert [(a, b) for a, b in g.edges] == list(nw._links)
    assert list(g.nodes) == [*NODES, C1, C2]
    for a, b, data in g.edges(data=True):
        assert data["link"] is nw.link(a, b)
    assert delays(nw, R1, H1, 3) == [40 * MS] * 3 == delays(nw, H1, R1, 3)
    # A replica's successors: the other replicas, then the clients (insertion order).
    assert list(g.successors(H1)) == [P1, R1, H2, C1, C2]


# ---------------------------------------------------------------------------------------------
# Loss


def test_loss_fraction() -> None:
    nw = network({"latency": "1ms", "loss": 0.3}, seed=11)
    results = [nw.transmit(H1, P1, 100, i) for i in range(20_000)]
    lost = sum(r is None for r in results)
    assert abs(lost / 20_000 - 0.3) <= 0.02
    assert all(r == i + MS for i, r in enumerate(results) if r is not None)
    # Deterministic: same seed, same losses.
    again = network({"latency": "1ms", "loss": 0.3}, seed=11)
    assert [again.transmit(H1, P1, 100, i) for i in range(20_000)] == results


def test_loss_percent_and_per_link() -> None:
    nw = network({"loss": "0%", "links": [{"from": C1, "to": H1, "loss": "30%"}]}, seed=3)
    lossy = sum(nw.transmit(C1, H1, 10, 0) is None for _ in range(20_000))
    assert abs(lossy / 20_000 - 0.3) <= 0.02
    assert all(nw.transmit(H1, C1, 10, 0) == 0 for _ in range(1000))
    assert all(nw.transmit(P1, H1, 10, 0) == 0 for _ in range(1000))


def test_zero_loss_never_drops() -> None:
    nw = network({"latency": "1ms"})
    assert all(nw.transmit(H1, P1, 100, 0) is not None for _ in range(5000))


# ---------------------------------------------------------------------------------------------
# Bandwidth: serialisation delay and a FIFO queue per link


def test_bandwidth_serialisation_and_fifo_queue() -> None:
    nw = network({"latency": "5ms", "bandwidth": "1Mbps"})
    # 1250 bytes = 10,000 bits = 10 ms at 1 Mbps.
    first = nw.transmit(H1, P1, 1250, 0)
    second = nw.transmit(H1, P1, 1250, 0)
    assert first == 10 * MS + 5 * MS
    assert second == 20 * MS + 5 * MS
    assert second - first == 10 * MS
    # A third packet sent while the link is still busy queues behind the second.
    assert nw.transmit(H1, P1, 1250, 12 * MS) == 30 * MS + 5 * MS
    # Once the queue has drained, a packet only pays its own serialisation.
    assert nw.transmit(H1, P1, 1250, 100 * MS) == 110 * MS + 5 * MS


def test_bandwidth_queue_is_per_directed_link() -> None:
    nw = network({"latency": "5ms", "bandwidth": "1Mbps"})
    assert nw.transmit(H1, P1, 1250, 0) == 15 * MS
    # Other links (including the reverse direction) are idle.
    assert nw.transmit(P1, H1, 1250, 0) == 15 * MS
    assert nw.transmit(H1, R1, 1250, 0) == 15 * MS
    assert nw.transmit(C1, H1, 1250, 0) == 15 * MS
    assert nw.transmit(H1, P1, 1250, 0) == 25 * MS


def test_bandwidth_override_on_one_link() -> None:
    nw = network({"latency": "1ms", "links": [{"between": [H1, R1], "bandwidth": "8Mbps"}]})
    # 1000 bytes at 8 Mbps = 1 ms.
    assert nw.transmit(H1, R1, 1000, 0) == 2 * MS
    assert nw.transmit(R1, H1, 1000, 0) == 2 * MS
    assert nw.transmit(H1, R1, 1000, 0) == 3 * MS
    assert nw.transmit(H1, P1, 1000, 0) == 1 * MS  # unlimited


def test_lost_packet_does_not_occupy_the_link() -> None:
    nw = network({"bandwidth": "1Mbps", "loss": 0.5}, seed=5)
    arrivals = []
    for _ in range(200):
        arrival = nw.transmit(H1, P1, 1250, 0)
        if arrival is not None:
            arrivals.append(arrival)
    assert arrivals == [10 * MS * (i + 1) for i in range(len(arrivals))]


def test_zero_byte_packet_has_no_serialisation_delay() -> None:
    nw = network({"latency": "2ms", "bandwidth": "1Mbps"})
    assert nw.transmit(H1, P1, 0, 0) == 2 * MS


# ---------------------------------------------------------------------------------------------
# Latency distributions

N_DRAWS = 20_000


def _mean_within(sample: list[int], expected: float, rel: float) -> None:
    mean = statistics.fmean(sample)
    assert abs(mean - expected) <= rel * expected, (mean, expected)


def test_uniform_latency() -> None:
    nw = network({"latency": {"dist": "uniform", "low": "5ms", "high": "15ms"}}, seed=21)
    sample = delays(nw, H1, P1, N_DRAWS)
    assert min(sample) >= 5 * MS and max(sample) <= 15 * MS
    _mean_within(sample, 10 * MS, 0.02)
    # Spread over the whole range, not a constant.
    assert min(sample) < 5.1 * MS and max(sample) > 14.9 * MS
    assert statistics.pstdev(sample) == pytest.approx(10 * MS / 12**0.5, rel=0.05)


def test_normal_latency() -> None:
    nw = network({"latency": {"dist": "normal", "mean": "10ms", "std": "1ms"}}, seed=22)
    sample = delays(nw, H1, P1, N_DRAWS)
    _mean_within(sample, 10 * MS, 0.02)
    assert statistics.pstdev(sample) == pytest.approx(1 * MS, rel=0.05)


def test_normal_latency_is_truncated_at_zero() -> None:
    nw = network({"latency": {"dist": "normal", "mean": "1ms", "std": "2ms"}}, seed=23)
    sample = delays(nw, H1, P1, 5000)
    assert min(sample) == 0  # truncated, never negative
    assert sum(1 for d in sample if d == 0) > len(sample) // 5  # P(N(1, 2) < 0) = 31%


def test_lognormal_latency_mean_and_std_are_of_the_delay() -> None:
    nw = network({"latency": {"dist": "lognormal", "mean": "10ms", "std": "5ms"}}, seed=24)
    sample = delays(nw, H1, P1, N_DRAWS)
    assert min(sample) > 0
    _mean_within(sample, 10 * MS, 0.03)
    assert statistics.pstdev(sample) == pytest.approx(5 * MS, rel=0.08)
    # Skewed right, unlike a normal: the median is below the mean.
    assert statistics.median(sample) < statistics.fmean(sample)


def test_lognormal_sampler_matches_spec_params() -> None:
    spec = LatencySpec.model_validate({"dist": "lognormal", "mean": "10ms", "std": "5ms"})
    mu, sigma = spec.lognormal_params()
    rng_a, rng_b = random.Random(9), random.Random(9)
    sampler = latency_sampler(spec)
    for _ in range(100):
        assert sampler(rng_a) == round(rng_b.lognormvariate(mu, sigma))


def test_exponential_latency() -> None:
    nw = network({"latency": {"dist": "exponential", "mean": "10ms"}}, seed=25)
    sample = delays(nw, H1, P1, N_DRAWS)
    assert 0 <= min(sample) < MS // 10  # the mode of an exponential is 0
    _mean_within(sample, 10 * MS, 0.03)
    assert statistics.pstdev(sample) == pytest.approx(10 * MS, rel=0.05)


def test_distribution_on_link_override() -> None:
    nw = network({"latency": "1ms", "links": [
        {"from": H1, "to": P1, "latency": {"dist": "exponential", "mean": "20ms"}}]}, seed=26)
    _mean_within(delays(nw, H1, P1, N_DRAWS), 20 * MS, 0.03)
    assert set(delays(nw, P1, H1, 100)) == {1 * MS}


def test_unknown_distribution_rejected() -> None:
    class Spec:
        dist = "pareto"

    with pytest.raises(ValueError):
        latency_sampler(Spec())


# ---------------------------------------------------------------------------------------------
# Determinism

MIXED: dict[str, Any] = {
    "latency": {"dist": "lognormal", "mean": "10ms", "std": "4ms"},
    "loss": 0.1,
    "bandwidth": "10Mbps",
    "links": [{"between": [H1, C1], "latency": {"dist": "uniform", "low": "1ms", "high": "9ms"}},
              {"from": R1, "to": H2, "latency": {"dist": "normal", "mean": "3ms", "std": "1ms"}}],
}


def _trace(nw: Network, seed: int) -> list[int | None]:
    pick = random.Random(seed)
    pairs = all_pairs(nw)
    out = []
    for i in range(3000):
        a, b = pick.choice(pairs)
        out.append(nw.transmit(a, b, pick.randrange(1, 5000), i * 100_000))
    return out


def test_same_seed_same_sequence() -> None:
    a = _trace(network(MIXED, seed=42), 0)
    b = _trace(network(MIXED, seed=42), 0)
    assert a == b
    assert any(x is None for x in a) and any(x is not None for x in a)


def test_different_seed_different_sequence() -> None:
    assert _trace(network(MIXED, seed=42), 0) != _trace(network(MIXED, seed=43), 0)


def test_randomness_only_from_given_rng() -> None:
    random.seed(1)
    a = _trace(network(MIXED, seed=7), 0)
    random.seed(2)
    b = _trace(network(MIXED, seed=7), 0)
    assert a == b


# ---------------------------------------------------------------------------------------------
# Multicasts: one call for all copies, the same run as one send per copy

def test_mesh_fixed_ns_only_when_every_replica_link_is_one_constant_and_no_fault() -> None:
    assert network({"latency": "5ms"}).mesh_fixed_ns == 5 * MS
    # client links do not matter: a multicast goes to replicas only
    assert network({"latency": "5ms", "links": [{"between": [H1, C1], "latency": "9ms"}]}
                   ).mesh_fixed_ns == 5 * MS
    assert network({"latency": "5ms", "links": [{"between": [H1, R1], "latency": "9ms"}]}
                   ).mesh_fixed_ns is None
    assert network({"latency": "5ms", "loss": 0.1}).mesh_fixed_ns is None
    assert network({"latency": {"dist": "uniform", "low": "1ms", "high": "2ms"}}
                   ).mesh_fixed_ns is None
    nw = network({"latency": "5ms"})
    nw.partition(1, [[H1, P1]])
    assert nw.mesh_fixed_ns is None
    nw.end_fault(1)
    assert nw.mesh_fixed_ns == 5 * MS
    nw.degrade(2, [(H1, P1)], None, None, 0.5, None, None)
    assert nw.mesh_fixed_ns is None


class _Counting:
    """SimTransport that counts per-copy sends, to tell which path a multicast took."""

    @staticmethod
    def make(net: dict[str, Any], record: bool) -> tuple[Any, Any, list[tuple[int, str, bytes]]]:
        from medbft.metrics import Traffic
        from sim.loop import VirtualTimeLoop
        from sim.run import SimTransport

        class Counting(SimTransport):
            sends = 0

            def send(self, src: str, to: str, data: bytes, kind: str) -> None:
                Counting.sends += 1
                super().send(src, to, data, kind)

        loop = VirtualTimeLoop()
        transport = Counting(loop, network(net), Traffic(), [] if record else None)
        got: list[tuple[int, str, bytes]] = []

        class Endpoint:
            def __init__(self, name: str) -> None:
                self.name = name

            def receive(self, data: bytes) -> None:
                got.append((loop.now_ns, self.name, data))

        for name in (*NODES, C1, C2):
            transport.endpoints[name] = Endpoint(name)
        return loop, transport, got


def _exchange(net: dict[str, Any], multicast: bool, record: bool = False,
              partition: bool = False) -> tuple[list[tuple[int, str, bytes]], Any, int]:
    loop, transport, got = _Counting.make(net, record)
    if partition:
        transport.network.partition(1, [[H1], [P1, R1, H2]])
    others = (P1, R1, H2)

    def burst(tag: bytes) -> None:
        datas = tuple(tag + b"-" + to.encode() for to in others)
        if multicast:
            transport.multicast(H1, others, datas, "PREPARE")
        else:
            for to, data in zip(others, datas, strict=True):
                transport.send(H1, to, data, "PREPARE")
        transport.send(P1, H1, tag + b"-single", "COMMIT")

    for i in range(3):
        loop.call_at_ns(i * MS, burst, f"b{i}".encode())
        loop.call_at_ns(i * MS, burst, f"c{i}".encode())  # two at one instant: one group
    loop.run_until_ns(100 * MS)
    loop.close()
    counted = (transport.traffic.by_type, transport.traffic.bytes_by_type,
               transport.traffic.lost, transport.network.lost_by_reason)
    return got, counted, type(transport).sends


@pytest.mark.pure_python  # subclasses sim.run.SimTransport to count its sends
@pytest.mark.parametrize("case", [
    {"net": {"latency": "5ms"}},
    {"net": {"latency": "5ms"}, "record": True},
    {"net": {"latency": "5ms"}, "partition": True},
    {"net": {"latency": "5ms", "links": [{"between": [H1, R1], "latency": "9ms"}]}},
    {"net": {"latency": "5ms", "loss": 0.3}},
])
def test_multicast_delivers_exactly_what_one_send_per_copy_does(case: dict[str, Any]) -> None:
    one_go, traffic, sends = _exchange(case["net"], True, case.get("record", False),
                                       case.get("partition", False))
    per_copy, traffic_per_copy, _ = _exchange(case["net"], False, case.get("record", False),
                                              case.get("partition", False))
    assert one_go == per_copy  # same copies, same instants, same order
    assert traffic == traffic_per_copy
    # only a full trace sends the copies one by one (the 6 single COMMITs always go so)
    assert sends == (6 + 6 * 3 if case.get("record") else 6)
    if case == {"net": {"latency": "5ms"}}:
        assert [t for t, _, _ in one_go][:6] == [5 * MS] * 6
    if "loss" in case["net"]:
        assert traffic[2] > 0, "some copies were lost, and counted as the per-copy path does"
