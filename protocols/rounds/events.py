"""Inputs, effects and notifications of the rounds machine (besides the shared ones of
``p2pnode_protocols.machine``: ``MessageReceived``, ``TimerFired``, ``Send``, ``Broadcast``,
``SetTimer``, ``CancelTimer``).

The machine never trains, fetches or aggregates: it asks for that with an effect
(:class:`Train`, :class:`Aggregate`, :class:`Prefetch`) and hears the outcome as an input
(:class:`TrainingDone`, :class:`Computed`). It never submits to the log itself either: a
:class:`Submit` carries a rounds transaction's bytes to the consensus service, and the commit
comes back, in log order, as :class:`Committed`.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pnode_protocols.machine import Effect, Event, Notify

from .ledger import Applied
from .messages import RoundResult, UpdateRef
from .selector import Candidate

__all__ = [
    "Aggregate",
    "BadProposal",
    "Committed",
    "Computed",
    "Fetched",
    "JobApplied",
    "MembersSeen",
    "Prefetch",
    "Resumed",
    "RoundPhase",
    "Submit",
    "Train",
    "TrainingDone",
    "Unsolicited",
]

# -- inputs ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Committed(Event):
    """The rounds transactions of log entry ``seq``, in order (fed for every entry, in order)."""

    seq: int
    bodies: tuple[bytes, ...]
    #: while a node replays its log at start-up it only rebuilds the ledger; :class:`Resumed`
    #: then makes it act on where the jobs stand.
    replay: bool = False
    #: the bodies of the entry's ``AppTx(app="trust")``, applied before the rounds bodies.
    trust_bodies: tuple[bytes, ...] = ()
    #: the committee in force for this entry when it differs from the ledger's (a committed
    #: reconfiguration): the ledger and the machine switch to it before applying the entry.
    committee: tuple[bytes, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Resumed(Event):
    """The replay is over: start, train or collect whatever the open rounds need."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MembersSeen(Event):
    """This node's current membership view, as selection candidates."""

    candidates: tuple[Candidate, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingDone(Event):
    """A local task finished: its update is stored as blob ``key`` (or it failed: key "")."""

    job: str
    round: int
    key: str = ""
    size: int = 0
    samples: int = 0
    error: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Fetched(Event):
    """A :class:`Prefetch` succeeded: this node holds the update blob ``key`` (only an update
    this validator could fetch is evidence of censorship when a proposal leaves it out)."""

    job: str
    round: int
    key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Computed(Event):
    """An :class:`Aggregate` finished. ``result`` is this node's own; ``check`` is the
    proposal it was asked to recompute (None when it aggregates to propose)."""

    job: str
    round: int
    result: RoundResult | None
    check: bytes | None = None
    error: str = ""


# -- effects ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Submit(Effect):
    """Commit this rounds transaction (bytes of ``transactions.encode_tx``) through PBFT."""

    body: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Train(Effect):
    job: str
    round: int
    shard: int
    base_key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Prefetch(Effect):
    """Fetch this update blob now, so aggregation finds it local."""

    job: str
    round: int
    key: str
    #: who holds it (the trainer that signed the notice), asked before the DHT answers.
    providers: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Aggregate(Effect):
    """Fetch what is missing, decode, run the job's rule and outer optimizer, evaluate, store the
    new model; answer with :class:`Computed`. With ``check``, compare against that proposal."""

    job: str
    round: int
    base_key: str
    updates: tuple[UpdateRef, ...]
    check: RoundResult | None = None
    check_bytes: bytes | None = None
    #: (node, shard) of the round's fresh updates (what a re-run needs).
    shards: tuple[tuple[bytes, int], ...] = ()
    #: the nodes whose fresh updates are spot-checked (see verify.spot_checked).
    spot: tuple[bytes, ...] = ()
    #: per update key, the validators known to hold its blob (they relayed its notice): asked
    #: right after its trainer, so an update whose trainer died or sits behind a slow link is
    #: still fetched from where f+1 validators have it, rather than left out (and refused as
    #: censorship by those validators).
    holders: tuple[tuple[str, tuple[bytes, ...]], ...] = ()


# -- news --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundPhase(Notify):
    """A round of a job entered ``phase`` (distribution, training, collection, aggregation,
    validation, completed) on this node."""

    job: str
    round: int
    phase: str
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobApplied(Notify):
    """A committed rounds transaction was applied (or rejected) by the ledger."""

    applied: Applied


@dataclass(frozen=True, slots=True, kw_only=True)
class BadProposal(Notify):
    """Evidence: ``proposer`` signed a result that does not recompute (``proposal`` holds the
    result's bytes and the proposer's signature)."""

    job: str
    round: int
    proposer: bytes
    reason: str
    proposal: bytes
    sig: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Unsolicited(Notify):
    """Evidence: ``node`` signed an update notice (``notice``, its encoded message) for a round
    of ``job`` whose committed tasks do not name it."""

    job: str
    round: int
    node: bytes
    notice: bytes
