"""Collectives (all-reduce groups), sans I/O."""

from .schedule import (
    Algorithm,
    Phase,
    Transfer,
    butterfly_plan,
    choose_algorithm,
    owner_butterfly,
    owner_ring,
    parts,
    ring_plan,
    shards,
)
from .topology import edge_cost, ring_cost, ring_order
