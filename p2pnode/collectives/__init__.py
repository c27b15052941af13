"""Collective groups: all-reduce, broadcast, barrier and all-gather over the swarm (docs/collectives.md)."""
