"""Checks of signed proofs that any node can run with only the committee and a ``Verifier``.

- a commit certificate (2f+1 commit votes) makes a log entry final for every reader;
- a checkpoint proof (2f+1 checkpoint votes) vouches for a state snapshot;
- a prepared proof (pre-prepare + 2f prepares) is what a view change carries;
- a view change and a new view are checked and recomputed here, so primary and backups use one
  function to derive the new view's pre-prepares;
- equivocation evidence (two conflicting signed messages from one sender).

Each ``check_*`` raises ``RemoteProtocolError`` with a reason, or returns None.
"""

from __future__ import annotations

from .codec import batch_digest, decode
from .config import Committee
from .errors import RemoteProtocolError
from .messages import (
    CertifiedEntry,
    Checkpoint,
    CommitVote,
    Message,
    NewView,
    Prepare,
    PreparedProof,
    PrePrepare,
    Request,
    StableCheckpoint,
    ViewChange,
)
from .signing import Verifier, verify
from .statemachine import state_digest

__all__ = [
    "check_certified_entry",
    "check_checkpoint_proof",
    "check_equivocation",
    "check_evidence",
    "check_new_view",
    "check_prepared_proof",
    "check_requests",
    "check_signed_by_member",
    "check_stable_checkpoint",
    "check_view_change",
    "new_view_plan",
]


def _fail(reason: str) -> RemoteProtocolError:
    return RemoteProtocolError(reason)


def check_signed_by_member(committee: Committee, verifier: Verifier, msg: Message) -> None:
    """Signed by a member, and bound to the committee's epoch: a vote of another epoch never
    counts here, even from a validator that belongs to both committees."""
    sender: bytes = msg.sender  # type: ignore[attr-defined]
    if getattr(msg, "epoch", committee.epoch) != committee.epoch:
        raise _fail(f"{type(msg).__name__} of epoch {msg.epoch} in epoch {committee.epoch}")  # type: ignore[attr-defined]
    if not committee.is_member(sender):
        raise _fail(f"{type(msg).__name__} from a non-member")
    if not verify(msg, verifier):
        raise _fail(f"{type(msg).__name__} has a bad signature")


def check_requests(verifier: Verifier, batch: tuple[Request, ...]) -> None:
    seen = set()
    for req in batch:
        key = (req.client, req.request_id)
        if key in seen:
            raise _fail("a batch names one request twice")
        seen.add(key)
        if not verify(req, verifier):
            raise _fail("a request in the batch has a bad client signature")


def _quorum_of(committee: Committee, senders: list[bytes], what: str) -> None:
    if len(set(senders)) != len(senders):
        raise _fail(f"{what}: duplicate signers")
    if len(senders) < committee.quorum:
        raise _fail(f"{what}: {len(senders)} signers, need {committee.quorum}")


def check_certified_entry(committee: Committee, verifier: Verifier, ce: CertifiedEntry) -> None:
    """The entry's batch matches its digest and 2f+1 members committed it in one view."""
    entry, votes = ce.entry, ce.certificate.votes
    if batch_digest(entry.batch) != entry.digest:
        raise _fail("entry digest does not match its batch")
    if not votes:
        raise _fail("empty certificate")
    view = votes[0].view
    for v in votes:
        if v.view != view or v.seq != entry.seq or v.digest != entry.digest:
            raise _fail("certificate votes disagree with the entry")
        check_signed_by_member(committee, verifier, v)
    _quorum_of(committee, [v.sender for v in votes], "certificate")


def check_checkpoint_proof(
    committee: Committee,
    verifier: Verifier,
    seq: int,
    proof: tuple[Checkpoint, ...],
    base: int = 0,
) -> bytes:
    """2f+1 members vouch for one state digest at ``seq``; returns that digest. ``base`` is the
    seq the committee's epoch starts after (0 for genesis)."""
    if seq < base:
        raise _fail(f"checkpoint {seq} is before this epoch (it starts after {base})")
    if seq == base:
        # The epoch's start needs no proof: every replica of the epoch starts from it (genesis,
        # or the state after the last entry of the previous committee, from the certified log).
        if proof:
            raise _fail("the epoch's starting checkpoint carries no proof")
        return b""
    if not proof:
        raise _fail("missing checkpoint proof")
    digest = proof[0].state_digest
    for c in proof:
        if c.seq != seq or c.state_digest != digest:
            raise _fail("checkpoint proof votes disagree")
        check_signed_by_member(committee, verifier, c)
    _quorum_of(committee, [c.sender for c in proof], "checkpoint proof")
    return digest


def check_stable_checkpoint(
    committee: Committee, verifier: Verifier, cp: StableCheckpoint, base: int = 0
) -> None:
    digest = check_checkpoint_proof(committee, verifier, cp.seq, cp.proof, base)
    if cp.seq > base and state_digest(cp.snapshot) != digest:
        raise _fail("snapshot does not match the checkpoint digest")


def check_prepared_proof(committee: Committee, verifier: Verifier, p: PreparedProof) -> None:
    pp = p.pre_prepare
    if pp.sender != committee.primary(pp.view):
        raise _fail("prepared proof: pre-prepare not from the view's primary")
    check_signed_by_member(committee, verifier, pp)
    if batch_digest(pp.batch) != pp.digest:
        raise _fail("prepared proof: digest does not match the batch")
    check_requests(verifier, pp.batch)
    for q in p.prepares:
        if q.view != pp.view or q.seq != pp.seq or q.digest != pp.digest:
            raise _fail("prepared proof: prepares disagree with the pre-prepare")
        if q.sender == pp.sender:
            raise _fail("prepared proof: the primary does not prepare")
        check_signed_by_member(committee, verifier, q)
    senders = [q.sender for q in p.prepares]
    if len(set(senders)) != len(senders) or len(senders) < 2 * committee.f:
        raise _fail("prepared proof: need 2f prepares from distinct backups")


def check_view_change(
    committee: Committee, verifier: Verifier, vc: ViewChange, window: int, base: int = 0
) -> None:
    check_signed_by_member(committee, verifier, vc)
    check_checkpoint_proof(committee, verifier, vc.stable_seq, vc.checkpoint_proof, base)
    seqs = set()
    for p in vc.prepared:
        pp = p.pre_prepare
        if not vc.stable_seq < pp.seq <= vc.stable_seq + window:
            raise _fail("view change: prepared seq outside the window")
        if pp.view >= vc.new_view:
            raise _fail("view change: prepared in a view not before the new one")
        if pp.seq in seqs:
            raise _fail("view change: two proofs for one seq")
        seqs.add(pp.seq)
        check_prepared_proof(committee, verifier, p)


def new_view_plan(
    view_changes: tuple[ViewChange, ...],
) -> tuple[int, dict[int, PrePrepare | None]]:
    """From 2f+1 view changes: the new low mark and, per seq above it, the pre-prepare to
    re-propose (the highest-view prepared one) or None for a null (empty) entry."""
    low = max(vc.stable_seq for vc in view_changes)
    best: dict[int, PrePrepare] = {}
    for vc in view_changes:
        for p in vc.prepared:
            pp = p.pre_prepare
            if pp.seq > low and (pp.seq not in best or pp.view > best[pp.seq].view):
                best[pp.seq] = pp
    high = max(best, default=low)
    return low, {s: best.get(s) for s in range(low + 1, high + 1)}


def check_new_view(
    committee: Committee, verifier: Verifier, nv: NewView, window: int, base: int = 0
) -> int:
    """Check a new view completely; returns its low mark (the highest stable checkpoint)."""
    if nv.sender != committee.primary(nv.view):
        raise _fail("new view not from the view's primary")
    check_signed_by_member(committee, verifier, nv)
    for vc in nv.view_changes:
        if vc.new_view != nv.view:
            raise _fail("new view carries a view change for another view")
        check_view_change(committee, verifier, vc, window, base)
    _quorum_of(committee, [vc.sender for vc in nv.view_changes], "new view")
    low, plan = new_view_plan(nv.view_changes)
    if [p.seq for p in nv.pre_prepares] != list(plan):
        raise _fail("new view pre-prepares do not cover the planned seqs")
    empty = batch_digest(())
    for pp in nv.pre_prepares:
        if pp.view != nv.view or pp.sender != nv.sender:
            raise _fail("new view pre-prepare of another view or sender")
        check_signed_by_member(committee, verifier, pp)
        old = plan[pp.seq]
        want = empty if old is None else old.digest
        if pp.digest != want or batch_digest(pp.batch) != pp.digest:
            raise _fail("new view pre-prepare differs from the recomputed one")
    return low


def check_evidence(committee: Committee, verifier: Verifier, a: Message, b: Message) -> bytes:
    """Two validly signed messages of one kind from one sender that cannot both be honest;
    returns the offender's id."""
    if type(a) is not type(b) or a == b:
        raise _fail("evidence needs two different messages of one type")
    check_signed_by_member(committee, verifier, a)
    check_signed_by_member(committee, verifier, b)
    if a.sender != b.sender:  # type: ignore[attr-defined]
        raise _fail("evidence messages have different senders")
    if isinstance(a, PrePrepare | Prepare | CommitVote):
        assert isinstance(b, PrePrepare | Prepare | CommitVote)
        if (a.epoch, a.view, a.seq) != (b.epoch, b.view, b.seq) or a.digest == b.digest:
            raise _fail("no conflict: different slot or same digest")
    elif isinstance(a, Checkpoint):
        assert isinstance(b, Checkpoint)
        if (a.epoch, a.seq) != (b.epoch, b.seq) or a.state_digest == b.state_digest:
            raise _fail("no conflict: different seq or same state")
    else:
        raise _fail(f"{type(a).__name__} cannot equivocate")
    return a.sender  # type: ignore[attr-defined]


def check_equivocation(
    first: bytes, second: bytes, committee: Committee, verifier: Verifier
) -> bytes:
    """Equivocation evidence from bytes (two ``encode``d messages), as a slashing transaction
    carries it: returns the offender, or raises ``RemoteProtocolError``. ``committee`` is the
    one of the messages' epoch (a vote of another epoch is refused)."""
    if type(first) is not bytes or type(second) is not bytes:
        raise _fail("evidence is two encoded messages")
    return check_evidence(committee, verifier, decode(first), decode(second))
