"""A job as the rounds protocol sees it: who may train, how many, how long, how strict.

:class:`JobSpec` holds what scheduling and the round commit need (participants, deadlines, the
sync policy, capabilities, priority) and carries the learning part (model, data, optimizers,
rule, compression) as an opaque canonical map that only the daemon's learning code reads. A spec
travels inside the committed ``CreateJob`` transaction in canonical CBOR, so every node decodes
the same bytes to the same spec; :func:`decode_spec` bounds and checks everything it reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import cbor2

from p2pnode_protocols.cbor_tree import fits
from p2pnode_protocols.machine import RemoteProtocolError

__all__ = [
    "MAX_PARTICIPANTS",
    "MAX_ROUNDS",
    "STRAGGLERS",
    "SYNC_POLICIES",
    "Capabilities",
    "JobSpec",
    "decode_spec",
    "encode_spec",
]

MAX_PARTICIPANTS = 64
MAX_ROUNDS = 100_000
MAX_NAME = 64
SYNC_POLICIES = ("bsp", "bounded")
STRAGGLERS = ("drop", "wait")


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    """What a node must have to be given a task of the job."""

    min_cpu_cores: int = 0
    min_memory_mb: int = 0
    gpu: bool = False

    def __post_init__(self) -> None:
        for name in ("min_cpu_cores", "min_memory_mb"):
            v = getattr(self, name)
            if type(v) is not int or not 0 <= v <= 1 << 30:
                raise ValueError(f"capabilities.{name} must be an int >= 0")
        if type(self.gpu) is not bool:
            raise ValueError("capabilities.gpu must be true or false")


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSpec:
    """Validated on construction; every error names the key it is about."""

    name: str = "job"
    rounds: int = 20
    #: a round starts only with at least this many participants, and takes at most the max.
    min_participants: int = 1
    max_participants: int = 8
    #: data shards, one task each per round (default: ``max_participants``).
    shards: int = 0
    #: seconds from the round's start to the collection deadline.
    round_deadline: float = 30.0
    #: ``bsp``: updates of this round only; ``bounded``: also updates trained on a model up to
    #: ``staleness`` rounds older, down-weighted.
    sync: str = "bsp"
    staleness: int = 0
    #: at the deadline: ``drop`` stragglers (if ``min_updates`` arrived), or ``wait`` up to
    #: another deadline for them.
    stragglers: str = "drop"
    min_updates: int = 1
    capabilities: Capabilities = field(default_factory=Capabilities)
    #: higher-priority jobs take scarce slots first.
    priority: int = 0
    #: verified work: the fraction of a round's trainers whose tasks the validators re-run and
    #: compare bit for bit (0: off, e.g. for external trainers that are not deterministic).
    spot_check: float = 0.25
    #: verified work: trainers commit to their update before they reveal it.
    commit_reveal: bool = True
    #: the commit phase closes when every assigned trainer committed, or this fraction of
    #: ``round_deadline`` after the round started.
    commit_window: float = 0.5
    #: the learning part (see p2pnode/jobs/spec.py): a canonical-CBOR-able map.
    learning: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if type(self.name) is not str or not 0 < len(self.name) <= MAX_NAME:
            raise ValueError(f"name must be 1..{MAX_NAME} characters")
        _int("rounds", self.rounds, 1, MAX_ROUNDS)
        _int("participants.min", self.min_participants, 1, MAX_PARTICIPANTS)
        _int("participants.max", self.max_participants, 1, MAX_PARTICIPANTS)
        if self.min_participants > self.max_participants:
            raise ValueError("participants.min must not exceed participants.max")
        _int("participants.shards", self.shards, 0, MAX_PARTICIPANTS)
        if self.shards == 0:
            object.__setattr__(self, "shards", self.max_participants)
        if self.shards < self.min_participants:
            raise ValueError("participants.shards must be at least participants.min")
        if (
            type(self.round_deadline) not in (int, float)
            or not 0.05 <= self.round_deadline <= 86400
        ):
            raise ValueError("sync.deadline must be 0.05..86400 seconds")
        object.__setattr__(self, "round_deadline", float(self.round_deadline))
        if self.sync not in SYNC_POLICIES:
            raise ValueError(f"sync.policy must be one of {', '.join(SYNC_POLICIES)}")
        _int("sync.staleness", self.staleness, 0, 64)
        if self.sync == "bsp" and self.staleness:
            raise ValueError('sync.staleness needs sync.policy = "bounded"')
        if self.stragglers not in STRAGGLERS:
            raise ValueError(f"sync.stragglers must be one of {', '.join(STRAGGLERS)}")
        _int("sync.min_updates", self.min_updates, 1, MAX_PARTICIPANTS)
        if self.min_updates > self.shards:
            raise ValueError("sync.min_updates must not exceed participants.shards")
        _int("priority", self.priority, -1000, 1000)
        for name in ("spot_check", "commit_window"):
            v = getattr(self, name)
            if type(v) not in (int, float) or not 0 <= v <= 1:
                raise ValueError(f"verify.{name} must be a number in 0..1")
            object.__setattr__(self, name, float(v))
        if type(self.commit_reveal) is not bool:
            raise ValueError("verify.commit_reveal must be true or false")
        if not isinstance(self.capabilities, Capabilities):
            raise ValueError("capabilities must be a table")
        if not isinstance(self.learning, Mapping):
            raise ValueError("learning must be a table")
        object.__setattr__(self, "learning", MappingProxyType(dict(self.learning)))


def _int(name: str, v: object, lo: int, hi: int) -> None:
    if type(v) is not int or not lo <= v <= hi:
        raise ValueError(f"{name} must be an integer in {lo}..{hi}")


def encode_spec(spec: JobSpec) -> bytes:
    body = {
        "name": spec.name,
        "rounds": spec.rounds,
        "min_participants": spec.min_participants,
        "max_participants": spec.max_participants,
        "shards": spec.shards,
        "round_deadline": spec.round_deadline,
        "sync": spec.sync,
        "staleness": spec.staleness,
        "stragglers": spec.stragglers,
        "min_updates": spec.min_updates,
        "capabilities": [
            spec.capabilities.min_cpu_cores,
            spec.capabilities.min_memory_mb,
            spec.capabilities.gpu,
        ],
        "priority": spec.priority,
        "learning": dict(spec.learning),
    }
    # The verified-work keys are written only when they differ from the defaults, so a spec
    # committed before they existed still decodes to the same bytes.
    for name, default in _VERIFY_DEFAULTS.items():
        if getattr(spec, name) != default:
            body[name] = getattr(spec, name)
    return cbor2.dumps(body, canonical=True)


_VERIFY_DEFAULTS: dict[str, Any] = {"spot_check": 0.25, "commit_reveal": True, "commit_window": 0.5}


def decode_spec(data: bytes) -> JobSpec:
    """The spec in a committed transaction, or ``RemoteProtocolError`` naming what is wrong."""
    try:
        obj = cbor2.loads(data, max_depth=8)
        if not fits(obj, len(data)):
            raise ValueError("not canonical CBOR (shared references)")
        if type(obj) is not dict:
            raise ValueError("a job spec is a map")
        caps = obj.pop("capabilities")
        if type(caps) is not list or len(caps) != 3:
            raise ValueError("capabilities must be [cpu, memory, gpu]")
        learning = obj.pop("learning")
        if type(learning) is not dict:
            raise ValueError("learning must be a map")
        spec = JobSpec(
            **obj,
            capabilities=Capabilities(min_cpu_cores=caps[0], min_memory_mb=caps[1], gpu=caps[2]),
            learning=learning,
        )
    except (cbor2.CBORError, ValueError, TypeError, KeyError, RecursionError) as exc:
        raise RemoteProtocolError(f"bad job spec: {exc}") from None
    if encode_spec(spec) != data:
        raise RemoteProtocolError("job spec is not canonical")
    return spec
