"""The normal case of the PBFT replica: requests, pre-prepare, prepare, commit and execution.

A request reaches every replica; the primary batches pending requests into a ``PrePrepare`` for
the next seq in its window; backups answer with ``Prepare``; 2f matching prepares make the slot
*prepared* and the replica sends ``CommitVote``; 2f+1 matching commit votes are a certificate
and the entry executes once every lower seq has. The request timer runs while requests are
pending in the normal case; it is how a backup notices a primary that makes no progress
(:mod:`.view_change` acts on it).
"""

from __future__ import annotations

import logging

from .certificates import check_requests, check_signed_by_member
from .codec import batch_digest
from .errors import LocalProtocolError, RemoteProtocolError
from .events import Commit, TimerKey
from .messages import (
    Certificate,
    CertifiedEntry,
    CommitVote,
    Entry,
    Prepare,
    PreparedProof,
    PrePrepare,
    Request,
)
from .replica_core import ReplicaCore, Slot
from .signing import verify
from .state import ReplicaStatus, SlotPhase, SlotTrigger
from .statemachine import execute_batch

__all__ = ["NormalCase"]

log = logging.getLogger(__name__)


class NormalCase(ReplicaCore):
    """Requests, batching, the three-phase agreement of one view, and in-order execution."""

    # -- requests and proposals -------------------------------------------------------------------

    def _on_request(self, req: Request, *, local: bool = False) -> None:
        """Queue ``req``; relay it to the committee if it came from our own client (``local``)."""
        if self.retired:
            return  # the next committee orders it: clients resend there
        old = self._pending.get(req.client)
        if self._executed(req) or (old is not None and old.request_id >= req.request_id):
            return  # a duplicate (or older) request: nothing to do
        if not verify(req, self._verifier):
            raise RemoteProtocolError("request has a bad client signature", reply_hint="reject")
        if old is None and len(self._pending) >= self.config.max_pending:
            log.debug("pending requests full; dropping one (the client retries)")
            return
        self._pending.pop(req.client, None)
        self._pending[req.client] = req
        if local:
            self._broadcast(req)

    def _maybe_propose(self) -> None:
        cfg = self.config
        self._next_seq = max(self._next_seq, self.ledger.seq)
        end = self.end
        top = (
            self.stable.seq + cfg.window
            if end is None
            else min(self.stable.seq + cfg.window, end - 1)
        )
        while self._next_seq + 1 <= top and self._next_seq - self.ledger.seq < cfg.max_inflight:
            batch = []
            for req in self._pending.values():
                if (req.client, req.request_id) not in self._inflight and not self._executed(req):
                    batch.append(req)
                    if len(batch) >= cfg.max_batch:
                        break
            if not batch and end is None:
                return
            # With a committee change pending, fill the gap to its activation with null batches
            # if there are no requests: the switch must not wait for client traffic.
            seq = self._next_seq + 1
            if seq <= max(self.stable.seq, self._view_low) or seq in self._certified:
                raise LocalProtocolError(f"primary would re-propose settled seq {seq}")
            self._next_seq = seq
            pp = self._sign(
                PrePrepare(
                    view=self.view,
                    seq=seq,
                    digest=batch_digest(tuple(batch)),
                    batch=tuple(batch),
                    sender=self.me,
                )
            )
            slot = self._slot(seq)
            self._accept_pre_prepare(slot, pp)  # type: ignore[arg-type]
            self._broadcast(pp)
            # With f = 0 (a committee of 1 to 3) the primary's own pre-prepare is already a
            # prepare quorum and its own commit vote a commit quorum: nothing will arrive to
            # advance the slot, so advance it now. With f > 0 this finds too few votes.
            self._progress(slot)

    def _sync_request_timer(self) -> None:
        # Waiting for the activation counts as a pending request: a primary that does not fill
        # the gap to it is replaced like one that sits on a request.
        want = (
            self.status is ReplicaStatus.NORMAL
            and not self.retired
            and (bool(self._pending) or self.end is not None)
        )
        if want and not self._timer_armed[TimerKey.REQUEST]:
            self._set_request_timer()
        elif not want:
            self._cancel_timer(TimerKey.REQUEST)

    def _set_request_timer(self) -> None:
        self._request_armed_at = self._now
        self._set_timer(TimerKey.REQUEST, self._request_timeout())

    def _request_timeout(self) -> float:
        cfg = self.config
        return min(cfg.request_timeout * 2**self._backoff, cfg.max_view_change_timeout)

    # -- pre-prepare, prepare, commit, execute ----------------------------------------------------

    def _on_pre_prepare(self, pp: PrePrepare) -> None:
        if self.status is not ReplicaStatus.NORMAL or pp.view != self.view:
            return  # another view: retransmission brings it again if it matters
        if pp.sender != self.primary:
            raise RemoteProtocolError("pre-prepare not from the primary")
        if not self._in_window(pp.seq) or pp.sender == self.me:
            return
        check_signed_by_member(self.committee, self._verifier, pp)
        if batch_digest(pp.batch) != pp.digest:
            raise RemoteProtocolError("pre-prepare digest does not match its batch")
        check_requests(self._verifier, pp.batch)
        slot = self._slot(pp.seq)
        if slot.pre_prepare is not None:
            if slot.pre_prepare.digest != pp.digest:
                self._evidence(slot.pre_prepare, pp, ("pp", pp.sender, pp.view, pp.seq))
            return
        done = self._certified.get(pp.seq)
        if done is not None and done.entry.digest != pp.digest:
            # A committed seq cannot take another value: refuse to prepare it.
            return
        self._accept_pre_prepare(slot, pp)
        self._progress(slot)

    def _accept_pre_prepare(self, slot: Slot, pp: PrePrepare) -> None:
        slot.pre_prepare = pp
        slot.advance(SlotTrigger.ACCEPT_PRE_PREPARE)
        self._inflight.update((r.client, r.request_id) for r in pp.batch)
        self._dirty = True
        if pp.sender != self.me:
            vote = self._vote(Prepare, pp)
            slot.my_prepare = vote  # type: ignore[assignment]
            slot.prepares[self.me] = vote  # type: ignore[assignment]
            self._broadcast(vote)

    def _on_prepare(self, p: Prepare) -> None:
        if self.status is not ReplicaStatus.NORMAL or p.view != self.view:
            return
        if not self._in_window(p.seq) or p.sender == self.me:
            return
        if p.sender == self.primary:
            raise RemoteProtocolError("the primary does not send prepares")
        slot = self._slots.get(p.seq)
        old = None if slot is None else slot.prepares.get(p.sender)
        if old is not None and old.digest == p.digest:
            return
        check_signed_by_member(self.committee, self._verifier, p)
        if old is not None:
            self._evidence(old, p, ("prepare", p.sender, p.view, p.seq))
            return
        slot = self._slot(p.seq)
        slot.prepares[p.sender] = p
        self._progress(slot)

    def _on_commit_vote(self, c: CommitVote) -> None:
        if self.status is not ReplicaStatus.NORMAL or c.view != self.view:
            return
        if not self._in_window(c.seq) or c.sender == self.me:
            return
        slot = self._slots.get(c.seq)
        old = None if slot is None else slot.commits.get(c.sender)
        if old is not None and old.digest == c.digest:
            return
        check_signed_by_member(self.committee, self._verifier, c)
        if old is not None:
            self._evidence(old, c, ("commit", c.sender, c.view, c.seq))
            return
        slot = self._slot(c.seq)
        slot.commits[c.sender] = c
        self._progress(slot)

    def _progress(self, slot: Slot) -> None:
        pp = slot.pre_prepare
        if pp is None:
            return
        if slot.phase is SlotPhase.PRE_PREPARED:
            primary = self.committee.primary(pp.view)
            matching = [
                q for q in slot.prepares.values() if q.digest == pp.digest and q.sender != primary
            ]
            if len(matching) >= 2 * self.committee.f:
                matching.sort(key=lambda q: q.sender)
                proof = PreparedProof(
                    pre_prepare=pp, prepares=tuple(matching[: 2 * self.committee.f])
                )
                slot.prepared = proof
                slot.advance(SlotTrigger.PREPARE_QUORUM)
                vote = self._vote(CommitVote, pp)
                slot.my_commit = vote  # type: ignore[assignment]
                slot.commits[self.me] = vote  # type: ignore[assignment]
                self._dirty = True
                self._broadcast(vote)
        if slot.phase in (SlotPhase.PRE_PREPARED, SlotPhase.PREPARED):
            votes = [c for c in slot.commits.values() if c.digest == pp.digest]
            if len(votes) >= self.committee.quorum:
                votes.sort(key=lambda c: c.sender)
                slot.advance(SlotTrigger.COMMIT_QUORUM)
                if pp.seq > self.ledger.seq and pp.seq not in self._certified:
                    entry = Entry(seq=pp.seq, digest=pp.digest, batch=pp.batch)
                    cert = Certificate(votes=tuple(votes[: self.committee.quorum]))
                    self._certified[pp.seq] = CertifiedEntry(entry=entry, certificate=cert)
                    self._dirty = True
                    self._execute_ready()

    def _execute_ready(self) -> None:
        progressed = False
        while (ce := self._certified.get(self.ledger.seq + 1)) is not None:
            entry = ce.entry
            self.ledger, results = execute_batch(
                self.ledger, entry.seq, entry.batch, verifier=self._verifier, config=self.config
            )
            progressed = True
            self._effects.append(
                Commit(seq=entry.seq, entry=entry, certificate=ce.certificate, results=results)
            )
            for req in entry.batch:
                self._inflight.discard((req.client, req.request_id))
                pend = self._pending.get(req.client)
                if pend is not None and self._executed(pend):
                    del self._pending[req.client]
            if entry.seq % self.config.checkpoint_interval == 0:
                self._make_checkpoint(entry.seq)
        if progressed and self._timer_armed[TimerKey.REQUEST]:
            # Shrink the timeouts one step only after a whole window of entries in which the
            # longest wait for progress stayed under a quarter of the current timeout. Resetting
            # them on every executed entry (or checkpoint) let a slow network, latency above
            # request_timeout, turn into a view change every few entries (found by simulation).
            self._max_gap = max(self._max_gap, self._now - self._request_armed_at)
            self._calm += 1
            if self._calm >= self.config.window:
                if self._backoff > 0 and 4 * self._max_gap < self._request_timeout():
                    self._backoff -= 1
                self._calm, self._max_gap = 0, 0.0
            # Progress: the primary is alive; give the remaining requests a fresh timeout.
            self._set_request_timer()
