"""A deterministic discrete-event simulator for the PBFT replica (TigerBeetle VOPR style).

``World(seed)`` draws a whole scenario from one ``random.Random(seed)`` (``SimConfig``), hands
sub-seeds to the network, the clocks and the fault injectors, runs a faulty safety phase, heals a
core and checks that it converges. Only effects are read: ``PbftChecker`` sees ``Commit``,
``StateInstalled``, ``ViewEntered`` and checkpoint votes, never a replica's internals.

``SimClock`` and ``SimNetwork`` are the reusable parts (virtual time; lossy, jittery,
partitionable links) that the membership world (``simulations/heartbeat.py``) runs on.
"""

from .checker import PbftChecker, SafetyViolation
from .clock import SimClock
from .config import SimConfig, draw_config
from .network import SimNetwork
from .world import RunResult, World

__all__ = [
    "PbftChecker",
    "RunResult",
    "SafetyViolation",
    "SimClock",
    "SimConfig",
    "SimNetwork",
    "World",
    "draw_config",
]
