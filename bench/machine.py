"""What this machine's core does per second of the operations a benchmark's limits are made of.

Why this exists: several benchmarks bound a figure by what the cryptography alone costs here
(bench/real.py: four replicas that each verify every request; bench/sim_speed.py: the floor of
a request at n = 4). Those bounds move with the machine, often by 20% within a day on a shared
VM, so each run measures them afresh instead of quoting a figure from another day.
"""

from __future__ import annotations

import time

from node.crypto import Identity, Keyring

__all__ = ["ecdsa_per_s"]


def ecdsa_per_s(seconds: float = 1.0) -> dict[str, float]:
    """ECDSA P-256 signatures and verifications per second on one core, as the replicas and
    clients do them (`Keyring.sign`, `Keyring._verify_uncached`), each for about `seconds`."""
    ident = Identity.generate("bench")
    keys = Keyring(ident, {"bench": ident.public_bytes})
    data = b"x" * 200
    sig = keys.sign(data)
    out = {}
    for name, fn in (("sign_per_s", lambda: keys.sign(data)),
                     ("verify_per_s", lambda: keys._verify_uncached("bench", ident.public_bytes,
                                                                    data, sig))):
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(100):
                fn()
            count += 100
        out[name] = count / (time.perf_counter() - t0)
    return out
