"""Evidence of misbehaviour: the record the ledger keeps, and the check of an equivocation.

Two kinds of evidence reach the ledger:

- **attested**: a flag (``spot_check``, ``copy``, ``wrong_aggregate``, ``censorship``) inside a
  committed round result. The result carries the attestations of a quorum of validators, each of
  which checked the flag itself, so the ``CommitRound`` entry is the evidence; the record points
  at its seq. Repeated outlier flags (``outliers``) are evidence by the same token: the ledger
  counts them from committed results.
- **self-contained**: an equivocation, two conflicting messages signed by one validator. Any node
  checks it from the bytes alone (:func:`check_equivocation`), so anyone may submit it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from p2pnode_protocols.machine import RemoteProtocolError
from p2pnode_protocols.pbft import Committee, check_evidence, decode
from p2pnode_protocols.pbft.errors import RemoteProtocolError as PbftRemoteError
from p2pnode_protocols.signing import Verifier

__all__ = ["ATTESTED_KINDS", "EvidenceRecord", "check_equivocation", "evidence_id"]

ATTESTED_KINDS = ("spot_check", "copy", "wrong_aggregate", "censorship")


@dataclass(frozen=True, slots=True)
class EvidenceRecord:
    id: str
    seq: int
    offender: bytes
    kind: str
    #: "job/round" of an attested flag, or the slot of an equivocation ("PrePrepare v3 s17").
    ref: str
    detail: str
    penalty: int
    #: the record is dropped from the ledger's state after this seq (the log keeps it anyway).
    expires: int


def evidence_id(kind: str, offender: bytes, ref: str) -> str:
    """One offence, one id: the same offence proven twice is penalised once."""
    return hashlib.sha256(b"%s\x00%s\x00%s" % (kind.encode(), offender, ref.encode())).hexdigest()[
        :16
    ]


def check_equivocation(
    first: bytes, second: bytes, committees: Sequence[tuple[bytes, ...]], verifier: Verifier
) -> tuple[bytes, str]:
    """The offender and the slot, if ``first`` and ``second`` are two validly signed,
    conflicting PBFT messages of a validator of their epoch's committee (``committees[e]`` is
    the committee of epoch e); else RemoteProtocolError."""
    try:
        a, b = decode(first), decode(second)
    except PbftRemoteError as exc:
        raise RemoteProtocolError(f"evidence does not decode: {exc}") from None
    epoch = getattr(a, "epoch", 0)
    if not 0 <= epoch < len(committees):
        raise RemoteProtocolError(f"not evidence of equivocation: no committee of epoch {epoch}")
    try:
        offender = check_evidence(
            Committee(epoch=epoch, validators=committees[epoch]), verifier, a, b
        )
    except PbftRemoteError as exc:
        raise RemoteProtocolError(f"not evidence of equivocation: {exc}") from None
    view = getattr(a, "view", None)
    name = type(a).__name__
    slot = f"{name} e{epoch} v{view} s{a.seq}" if view is not None else f"{name} e{epoch} s{a.seq}"  # type: ignore[attr-defined]
    return offender, slot
