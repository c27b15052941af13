"""A chaos schedule: which fault happens to which node when, drawn from one seed.

The schedule is plain data, made before the run starts, so a failing seed replays the same
faults in the same order at the same offsets (what the processes do between them is up to the
operating system's scheduler, so a replay reproduces the faults, not every interleaving). It is
also written to the run's directory as JSON and can be read back with :func:`load`.

Faults come in pairs: a start (``kill``, ``stop``, ``partition``, ``links``) and the recovery
that ends it (``restart``, ``cont``, ``heal``, ``links`` back to the base setting), both inside
the fault window. The generator keeps the swarm within what it is meant to survive while it
still has work to finish: at most one validator down (killed or stopped) at a time, at most
``max_down`` nodes down in all, one partition at a time. Safety is checked whatever happens;
these limits only decide how much progress a run can make while it is being hurt.

A target of ``"primary"`` is resolved when the event fires (the primary moves with view
changes); the runner records which node that was.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

KINDS = ("kill", "restart", "stop", "cont", "partition", "heal", "links")
PRIMARY = "primary"


@dataclass(frozen=True)
class Links:
    """Link settings for every pair of hosts (seconds, seconds, fraction)."""

    delay: float
    jitter: float
    loss: float


@dataclass(frozen=True)
class Event:
    at: float  # seconds after the fault window opens
    kind: str
    node: int | str | None = None  # 1-based node index, or "primary"
    groups: tuple[tuple[int, ...], ...] = ()  # partition
    links: Links | None = None

    def describe(self) -> str:
        if self.kind == "partition":
            return "partition " + " | ".join(",".join(map(str, g)) for g in self.groups)
        if self.kind == "links":
            assert self.links is not None
            ln = self.links
            return f"links {ln.delay * 1e3:.0f}±{ln.jitter * 1e3:.0f} ms, {ln.loss:.1%} loss"
        if self.kind == "heal":
            return "heal"
        return f"{self.kind} node-{self.node}" if self.node != PRIMARY else f"{self.kind} primary"


@dataclass(frozen=True)
class Schedule:
    seed: int
    duration: float
    nodes: int
    committee: tuple[int, ...]
    base: Links
    events: tuple[Event, ...] = field(default_factory=tuple)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.events:
            out[e.kind] = out.get(e.kind, 0) + 1
        return out

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def load(path: Path) -> Schedule:
    """Read a schedule written by :meth:`Schedule.to_json`."""
    raw: dict[str, Any] = json.loads(path.read_text())
    events = []
    for e in raw["events"]:
        if e["kind"] not in KINDS:
            raise ValueError(f"{path}: unknown event kind {e['kind']!r}")
        events.append(
            Event(
                at=float(e["at"]),
                kind=e["kind"],
                node=e.get("node"),
                groups=tuple(tuple(g) for g in e.get("groups") or ()),
                links=Links(**e["links"]) if e.get("links") else None,
            )
        )
    return Schedule(
        seed=int(raw["seed"]),
        duration=float(raw["duration"]),
        nodes=int(raw["nodes"]),
        committee=tuple(raw["committee"]),
        base=Links(**raw["base"]),
        events=tuple(events),
    )


def make_schedule(
    seed: int,
    duration: float,
    nodes: int = 8,
    committee: tuple[int, ...] = (1, 2, 3, 4),
    *,
    base: Links = Links(0.04, 0.01, 0.01),
    mean_gap: float = 12.0,
    max_down: int = 2,
    partitions: bool = True,
    link_changes: bool = True,
) -> Schedule:
    """Faults over ``duration`` seconds for ``nodes`` daemons, ``committee`` among them.

    Node 1 (the bootstrap node of a fresh start) is killed like any other: a restarted node
    rejoins through the peers it remembers. ``mean_gap`` is the mean time between the starts of
    two faults. ``partitions``/``link_changes`` off leave a schedule a loopback swarm can run.
    """
    if duration <= 0 or nodes < 2 or not committee:
        raise ValueError("a schedule needs a positive duration, two nodes and a committee")
    if any(not 1 <= c <= nodes for c in committee):
        raise ValueError("committee members must be among the nodes")
    duration = round(duration, 3)
    rng = random.Random(seed)
    events: list[Event] = []
    down_until: dict[int | str, float] = {}  # node (or "primary") -> when it is back
    partition_until = 0.0
    links_until = 0.0
    t = rng.expovariate(1 / mean_gap)
    kinds = (
        ["kill", "stop"]
        + (["partition"] if partitions else [])
        + (["links"] if link_changes else [])
    )
    while t < duration - 5.0:
        live = {n: u for n, u in down_until.items() if u > t}
        down_until = live
        kind = rng.choice(kinds)
        end = min(duration, t + rng.uniform(5.0, 30.0))
        if kind in ("kill", "stop"):
            validators_down = [n for n in live if n == PRIMARY or n in committee]
            candidates: list[int | str] = [
                n for n in range(1, nodes + 1) if n not in live and n not in committee
            ]
            if not validators_down:
                candidates += [c for c in committee if c not in live] + [PRIMARY] * 2
            if len(live) < max_down and candidates:
                node = rng.choice(candidates)
                events.append(Event(round(t, 3), kind, node))
                back = "restart" if kind == "kill" else "cont"
                events.append(Event(round(end, 3), back, node))
                down_until[node] = end
        elif kind == "partition" and partition_until <= t:
            members = list(range(1, nodes + 1))
            rng.shuffle(members)
            cut = rng.randint(1, nodes // 2)
            groups = (tuple(sorted(members[cut:])), tuple(sorted(members[:cut])))
            events.append(Event(round(t, 3), "partition", groups=groups))
            events.append(Event(round(end, 3), "heal"))
            partition_until = end
        elif kind == "links" and links_until <= t:
            delay = round(rng.uniform(0.005, 0.15), 4)
            spec = Links(
                delay=delay,
                jitter=round(rng.uniform(0.0, min(0.03, delay)), 4),  # no frame leaves early
                loss=round(rng.uniform(0.0, 0.04), 4),
            )
            events.append(Event(round(t, 3), "links", links=spec))
            events.append(Event(round(end, 3), "links", links=base))
            links_until = end
        t += rng.expovariate(1 / mean_gap)
    events.sort(key=lambda e: e.at)  # stable: a recovery and a start at one time keep order
    return Schedule(seed, duration, nodes, tuple(committee), base, tuple(events))


__all__ = ["KINDS", "PRIMARY", "Event", "Links", "Schedule", "load", "make_schedule"]
