"""Shared pytest options and fixtures. `--sweep-seeds N` sets how many seeds the
fault-schedule sweep runs per swarm (default 100; 10000 for a long swarm). The first
`QUICK_SEEDS` seeds of each swarm stay in the quick loop (`pytest -m "not slow"`); the rest are
marked `slow`. `vloop` is a virtual-time loop for tests of the loop and what runs on it.

The suite runs the pure-Python modules even where a native build exists (`medbft native
build`): MEDBFT_NATIVE=0 is set here, before the project is imported, and child processes
inherit it. tests/test_native.py runs a subset against the compiled modules instead, with
MEDBFT_TEST_NATIVE=1, under which the compiled build must be in use."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

if os.environ.get("MEDBFT_TEST_NATIVE") != "1":
    os.environ["MEDBFT_NATIVE"] = "0"

from node import _native  # after the switch above
from sim.loop import VirtualTimeLoop


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("MEDBFT_TEST_NATIVE") == "1" and not _native.active():
        raise pytest.UsageError(f"MEDBFT_TEST_NATIVE=1 but the compiled modules are not in "
                                f"use: {_native.state()}")

QUICK_SEEDS = 5


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--sweep-seeds", type=int, default=100,
                     help="number of seeds per swarm in tests/test_fuzz_swarm.py (default 100)")
    parser.addoption("--sweep-start", type=int, default=0,
                     help="first seed of the sweep (default 0)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sweep_seed" in metafunc.fixturenames:
        start = metafunc.config.getoption("--sweep-start")
        count = metafunc.config.getoption("--sweep-seeds")
        metafunc.parametrize("sweep_seed", [
            seed if seed < start + QUICK_SEEDS else pytest.param(seed, marks=pytest.mark.slow)
            for seed in range(start, start + count)])


@pytest.fixture
def vloop() -> Iterator[VirtualTimeLoop]:
    """A fresh virtual-time loop, closed (leftover tasks finalized) after the test."""
    loop = VirtualTimeLoop()
    try:
        yield loop
    finally:
        loop.close()

