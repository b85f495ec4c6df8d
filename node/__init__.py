"""What one replica runs, deployable alone (see node/pbft for the protocol itself)."""

from node import _native

_native.activate(__name__, __path__)
