"""Chaos runs: a training job over a real swarm while daemons are killed, stopped,
partitioned and slowed from a replayable schedule, with checkers for what must still hold.

:mod:`.schedule` draws the faults from a seed, :mod:`.clusters` applies them (testbed
namespaces, or loopback for process faults only), :mod:`.runner` drives the job and
:mod:`.checkers` says what went wrong. ``python -m p2pnode_simulations.chaos`` runs one.
"""

from .checkers import RoundWatch, check_finished, check_logs
from .runner import ChaosRun, RunResult, job_spec
from .schedule import Event, Links, Schedule, load, make_schedule

__all__ = [
    "ChaosRun",
    "Event",
    "Links",
    "RoundWatch",
    "RunResult",
    "Schedule",
    "check_finished",
    "check_logs",
    "job_spec",
    "load",
    "make_schedule",
]
