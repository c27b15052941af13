"""Governance proposals: what a change may say, and how stake-weighted votes decide it.

A proposal is open for ``voting_period`` log entries. At its deadline it is tallied: if the stake
that voted is below ``gov_quorum`` of all stake it *expires*; it *passes* if the yes stake is
more than ``gov_threshold`` of the voted stake, else it is *rejected*. A passed proposal takes
effect at the next epoch boundary (the first multiple of ``epoch_length`` after the deadline),
so every node switches at the same log position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .params import check_param

__all__ = ["ADMISSION_KEYS", "ProposalState", "boundary_after", "check_change"]

ADMISSION_KEYS = ("allowlist", "min_stake", "reputation_threshold")


@dataclass(slots=True)
class ProposalState:
    id: str
    proposer: bytes
    kind: str
    change: dict[str, Any]
    title: str
    seq: int
    deadline: int
    #: open | passed | rejected | expired | enacted
    status: str = "open"
    votes: dict[bytes, tuple[bool, int]] = field(default_factory=dict)
    yes: int = 0
    no: int = 0
    total_stake: int = 0
    activates_at: int | None = None


def boundary_after(seq: int, epoch_length: int) -> int:
    """The first epoch boundary strictly after ``seq``."""
    return (seq // epoch_length + 1) * epoch_length


def check_change(kind: str, change: dict[str, Any], committee: tuple[bytes, ...]) -> str:
    """ "" if ``change`` is a valid change of ``kind``, else why not."""
    if kind == "param":
        for name, value in change.items():
            reason = check_param(name, value)
            if reason:
                return reason
        return ""
    if kind == "committee":
        vals = change.get("validators")
        if set(change) != {"validators"} or type(vals) is not list or not vals:
            return 'a committee change is {"validators": [id, ...]}'
        if len(set(vals)) != len(vals):
            return "validators must be distinct"
        if tuple(vals) == tuple(committee):
            return "that is the committee in force"
        return ""
    if kind == "admission":
        unknown = set(change) - set(ADMISSION_KEYS)
        if unknown:
            return f"admission keys are {', '.join(ADMISSION_KEYS)}; not {sorted(unknown)}"
        if "allowlist" in change and type(change["allowlist"]) is not list:
            return "allowlist must be a list of node ids (empty: everyone)"
        for name in ("min_stake", "reputation_threshold"):
            if name in change:
                reason = check_param(name, change[name])
                if reason:
                    return reason
        return ""
    return f"unknown proposal kind {kind!r}"
