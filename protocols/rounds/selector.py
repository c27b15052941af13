"""Who trains a round: the default selector, and what a pluggable one is given.

A :class:`Candidate` is what this node's membership view says of a peer (alive, capabilities, free
slots, models held) plus the reliability the committed rounds give it. :func:`select_tasks` is the
default policy: alive and capable nodes with a free slot, those already holding the round's model
first (no download), then the most reliable, each keeping the shard it trained before where it
can (the same data stays on the same node, as in cross-device federated learning). Everything
it reads is either committed (the ledger) or in the proposal itself, so any node can check that a
committed assignment names distinct shards of the job and a legal number of participants.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .spec import JobSpec
from .transactions import Task

__all__ = ["Candidate", "Selector", "eligible", "select_tasks"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    node: bytes
    alive: bool = True
    cpu_cores: int = 0
    memory_mb: int = 0
    gpu: bool = False
    free_slots: int = 1
    models: tuple[str, ...] = ()
    reliability: float = 0.5


#: (spec, round, model tag, candidates, slots already taken per node, previous shards) -> tasks
Selector = Callable[
    [JobSpec, int, str, Sequence[Candidate], Mapping[bytes, int], Mapping[bytes, int]],
    tuple[Task, ...],
]


def eligible(spec: JobSpec, c: Candidate, taken: int) -> bool:
    caps = spec.capabilities
    return (
        c.alive
        and c.cpu_cores >= caps.min_cpu_cores
        and c.memory_mb >= caps.min_memory_mb
        and (c.gpu or not caps.gpu)
        and c.free_slots - taken > 0
    )


def select_tasks(
    spec: JobSpec,
    round: int,
    model_tag: str,
    candidates: Sequence[Candidate],
    taken: Mapping[bytes, int],
    previous: Mapping[bytes, int],
) -> tuple[Task, ...]:
    """Up to ``min(max_participants, shards)`` tasks, one per node; () if fewer than
    ``min_participants`` (or ``min_updates``) nodes qualify. ``model_tag`` (``job@round``)
    names the round's base model as members gossip the models they hold."""
    pool = [c for c in candidates if eligible(spec, c, taken.get(c.node, 0))]
    pool.sort(key=lambda c: (model_tag not in c.models, -c.reliability, c.node))
    chosen = pool[: min(spec.max_participants, spec.shards)]
    if len(chosen) < max(spec.min_participants, spec.min_updates):
        return ()
    free = set(range(spec.shards))
    shard_of: dict[bytes, int] = {}
    for c in chosen:
        s = previous.get(c.node)
        if s is not None and s in free:
            shard_of[c.node] = s
            free.discard(s)
    # Shards nobody kept go round-robin over the rounds, so every shard is trained in turn.
    rest = sorted(free, key=lambda s: (s - round) % spec.shards)
    for c in chosen:
        if c.node not in shard_of:
            shard_of[c.node] = rest.pop(0)
    return tuple(Task(node=n, shard=s) for n, s in sorted(shard_of.items()))
