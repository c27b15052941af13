"""Collective groups over the swarm: all-reduce, broadcast, barrier, all-gather.

See docs/collectives.md.
"""
