"""Tests for node.quorum: f, quorum and reply-quorum sizes, and primary rotation."""

from __future__ import annotations

import pytest

from node.quorum import faults_tolerated, primary_of, quorum, reply_quorum

# n: (f, quorum, reply quorum)
QUORUM_TABLE = {
    4: (1, 3, 2),
    5: (1, 4, 2),
    6: (1, 4, 2),
    7: (2, 5, 3),
    8: (2, 6, 3),
    9: (2, 6, 3),
    10: (3, 7, 4),
    11: (3, 8, 4),
    12: (3, 8, 4),
    13: (4, 9, 5),
}


@pytest.mark.parametrize("n", sorted(QUORUM_TABLE))
def test_quorum_table(n: int) -> None:
    assert (faults_tolerated(n), quorum(n), reply_quorum(n)) == QUORUM_TABLE[n]


@pytest.mark.parametrize("n", range(1, 41))
def test_quorum_formula(n: int) -> None:
    f = faults_tolerated(n)
    assert f == (n - 1) // 3
    assert 3 * f + 1 <= n < 3 * (f + 1) + 1
    assert quorum(n) == -(-(n + f + 1) // 2)  # ceil((n+f+1)/2)
    assert reply_quorum(n) == f + 1
    if n == 3 * f + 1:
        assert quorum(n) == 2 * f + 1


@pytest.mark.parametrize("n", range(4, 41))
def test_quorums_intersect_in_a_correct_replica(n: int) -> None:
    f, q = faults_tolerated(n), quorum(n)
    assert 2 * q - n >= f + 1  # any two quorums share f+1, so at least one correct replica
    assert q <= n - f  # a quorum is reachable with f replicas silent
    # ... and q is the smallest size with the intersection property.
    assert 2 * (q - 1) - n < f + 1


def test_faults_tolerated_rejects_non_positive() -> None:
    for n in (0, -1):
        with pytest.raises(ValueError):
            faults_tolerated(n)
    assert faults_tolerated(1) == 0 and faults_tolerated(3) == 0


@pytest.mark.parametrize("n", [4, 5, 7, 13])
def test_primary_rotates(n: int) -> None:
    primaries = [primary_of(v, n) for v in range(3 * n)]
    assert primaries == [v % n for v in range(3 * n)]
    assert sorted(primaries[:n]) == list(range(n))
    assert all(primaries[v] != primaries[v + 1] for v in range(3 * n - 1))
    assert primary_of(0, n) == 0
