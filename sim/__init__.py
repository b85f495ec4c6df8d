"""The simulator: virtual time, a simulated network, faults and the safety checker."""

from node import _native

_native.activate(__name__, __path__)
