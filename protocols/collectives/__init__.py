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
