"""Layer 4: seed sweeps of random fault schedules. With at most f replicas crashed at any
time, safety must hold on every seed, and once every replica is back (the healed phase)
every request must settle. 12 seeds run by default; `--sweep-seeds 500` runs a long sweep."""

from __future__ import annotations

import random
from typing import Any

from sim.run import run_scenario
from sim.scenario import parse_scenario


def random_schedule(seed: int) -> dict[str, Any]:
    """Draw n, latency, loss and a crash/recover schedule (never more than f down at once)
    from the seed; the fault probabilities themselves are drawn too (swarm testing)."""
    rng = random.Random(f"sweep:{seed}")
    n = rng.choice([4, 4, 5, 7])
    f = (n - 1) // 3
    ids = [f"hospital-{i + 1}" for i in range(n)]
    crash_rate = rng.choice([0.0, 0.5, 1.5])
    faults: list[dict[str, str]] = []
    t_ms = 200
    while t_ms < 3000:
        t_ms += round(rng.expovariate(crash_rate or 0.001) * 1000) + 100
        if t_ms >= 3000:
            break
        victims = rng.sample(ids, rng.randint(1, f))
        down_ms = rng.randint(100, 1500)
        for v in victims:
            faults.append({"at": f"{t_ms}ms", "crash": v})
            faults.append({"at": f"{min(t_ms + down_ms, 3500)}ms", "recover": v})
        t_ms += down_ms
    return {
        "name": f"sweep-{seed}", "seed": seed, "duration": "4s", "drain": "12s",
        "nodes": [{"id": i, "role": "hospital"} for i in ids],
        "network": {"latency": {"dist": "uniform", "low": "2ms", "high": f"{rng.randint(3, 30)}ms"},
                    "loss": rng.choice([0.0, 0.0, 0.01, 0.05])},
        "protocol": {"batch_size": rng.choice([1, 4]), "batch_timeout": "1ms",
                     "checkpoint_interval": 8, "watermark_window": 16,
                     "view_change_timeout": "300ms", "client_timeout": "600ms"},
        "cpu": rng.choice(["none", "default"]),
        "workload": {"clients": rng.randint(1, 3), "outstanding": rng.randint(1, 2)},
        "faults": faults,
        "expect": {"safety": True, "liveness": True},
    }


def check_seed(seed: int) -> None:
    raw = random_schedule(seed)
    summary = run_scenario(parse_scenario(raw, f"<sweep seed {seed}>")).summary
    context = f"seed {seed}: {raw['faults']} -> {summary['liveness']}"
    assert summary["safety"]["ok"], f"{context}: {summary['safety']['violations']}"
    assert summary["liveness"]["ok"], context


def test_sweep(sweep_seed: int) -> None:
    check_seed(sweep_seed)
