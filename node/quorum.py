"""Quorum arithmetic for PBFT, kept pure and separate so it can be tested on its own.

Castro & Liskov (OSDI '99 §4) assume n = 3f+1 and quorums of 2f+1. For other n (5, 6, 8 ...)
2f+1 replicas no longer guarantee that two quorums share f+1 replicas, so we use the general
Byzantine quorum ceil((n+f+1)/2) (the same as BFT-SMaRt's "> (n+f)/2"), which equals 2f+1
exactly when n = 3f+1.
"""

from __future__ import annotations

__all__ = ["faults_tolerated", "primary_of", "quorum", "reply_quorum"]


def faults_tolerated(n: int) -> int:
    """f = floor((n-1)/3): the most Byzantine replicas n replicas tolerate."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    return (n - 1) // 3


def quorum(n: int) -> int:
    """Size of a prepare/commit/checkpoint/view-change quorum: ceil((n+f+1)/2)."""
    f = faults_tolerated(n)
    return (n + f + 2) // 2


def reply_quorum(n: int) -> int:
    """Matching replies a client needs (§4.1): f+1, so at least one is from a correct replica."""
    return faults_tolerated(n) + 1


def primary_of(view: int, n: int) -> int:
    """The primary of view v is p = v mod n (§4)."""
    return view % n
