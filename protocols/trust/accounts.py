"""What the trust ledger keeps per node: its account, its journal entries and its reputation."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["Account", "Entry", "Reputation"]


@dataclass(slots=True)
class Account:
    """Units a node holds: ``balance`` it may spend or stake, ``stake`` it has put at risk."""

    balance: int = 0
    stake: int = 0
    #: the largest nonce of the node's signed transactions so far (each must be larger).
    nonce: int = 0
    earned: int = 0
    slashed: int = 0


@dataclass(frozen=True, slots=True)
class Entry:
    """One committed change of an account, with why: every unit moved is explained by one."""

    seq: int
    node: bytes
    balance: int
    stake: int
    #: genesis | reward | validator_reward | slash | stake | unstake | transfer
    reason: str
    #: what it refers to: "job/round", an evidence id, a proposal id, a peer.
    ref: str
    detail: str = ""


@dataclass(slots=True)
class Reputation:
    """Usefulness over time, from the committed rounds: the reliability the rewards and the
    admission policy read."""

    assigned: int = 0
    delivered: int = 0
    flagged: int = 0
    score_sum: float = 0.0
    #: recent rounds this node delivered in: (job/round, seq, was it an outlier).
    recent: deque[tuple[str, int, bool]] = field(default_factory=deque)

    @property
    def reliability(self) -> float:
        """In [0, 1], 0.5 for a node not seen yet: a Laplace estimate of the share of its tasks
        that delivered an update nobody flagged, where every proven offence also counts as a
        failed trial (so one without any task, as an unsolicited update, lowers it too). Only
        + and / of ints: the same on every node."""
        good = max(0, self.delivered - self.flagged)
        return min(1.0, (good + 1) / (self.assigned + self.flagged + 2))
