"""The rounds machine's settings and a validator's record of one open round."""

from __future__ import annotations

from dataclasses import dataclass, field

from .messages import UpdateRef

__all__ = ["METRIC_TOLERANCE", "OpenRound", "RoundsConfig"]

#: how far a proposal's accuracy and loss may differ from a validator's own (they go through
#: BLAS, whose last bits may differ between machines); the model key must match exactly.
METRIC_TOLERANCE = 1e-3


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundsConfig:
    #: seconds a starter has to get a round's tasks committed before the next one tries.
    start_timeout: float = 3.0
    #: seconds a proposer has, after collection closed, before the next validator proposes.
    result_timeout: float = 5.0
    #: update notices and commitments a validator takes from one peer per minute (0: no limit);
    #: the excess is dropped and counted.
    max_notices_per_minute: int = 600
    #: a proposal that leaves out an update this validator held before its own close and at
    #: least this long before the proposal arrived is censorship: refused, and flagged by this
    #: validator's next proposal.
    censor_grace: float = 0.05
    #: a trainer that hears no CommitClosed reveals this long after the commit window's end.
    reveal_grace: float = 0.2
    #: seconds a trainer waits before it tries a failed task again, and how many times it does
    #: (a reassignment of the round trains it again in any case).
    retrain_delay: float = 5.0
    max_retrains: int = 3


@dataclass(slots=True)
class OpenRound:
    """A validator's collection for one job's open round."""

    round: int
    opened: float
    deadline: float
    updates: dict[tuple[bytes, int], UpdateRef] = field(default_factory=dict)
    closed_at: float | None = None
    attempt: int = 0
    aggregating: bool = False
    proposal: bytes | None = None
    attestations: dict[bytes, bytes] = field(default_factory=dict)
    submitted: bool = False
    #: digests of proposals this validator judged (refused or being recomputed): a copy that
    #: comes again is not recomputed again.
    checked: set[bytes] = field(default_factory=set)
    #: digest -> this validator's attestation of it, sent again when the proposal comes again
    #: (the first may have been lost, or the proposer re-proposed it on a later turn).
    attested: dict[bytes, bytes] = field(default_factory=dict)
    extended: int = 0
    #: (node, round) -> when this validator got the update (for the censorship check).
    held: dict[tuple[bytes, int], float] = field(default_factory=dict)
    #: (node, round) -> the validators known to hold the update (this one, and those that
    #: relayed it): censorship is leaving out an update f+1 validators hold.
    holders: dict[tuple[bytes, int], set[bytes]] = field(default_factory=dict)
    #: update blobs this validator fetched (only those can be evidence of censorship).
    fetched: set[str] = field(default_factory=set)
