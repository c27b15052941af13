"""The PBFT replica as a sans-I/O machine: ``Replica.handle(event, now) -> list[Effect]``.

Castro & Liskov's protocol with signatures (not MACs), so every proof travels as signed messages:

- normal case: a request reaches every replica; the primary batches pending requests into a
  ``PrePrepare`` for the next seq in its window; backups answer with ``Prepare``; 2f matching
  prepares make the slot *prepared* and the replica sends ``CommitVote``; 2f+1 matching commit
  votes are a certificate and the entry executes once every lower seq has.
- checkpoints: after every K executed entries a replica signs its state digest; 2f+1 matching
  votes make the checkpoint *stable*, the log below it is dropped and the window slides.
- view change: a backup whose pending request sees no progress for ``request_timeout`` sends
  ``ViewChange`` for view v+1 (stable checkpoint + prepared proofs). f+1 view changes for higher
  views pull a replica along. With 2f+1 view changes for its view the new primary sends
  ``NewView`` whose pre-prepares are *recomputed* by every backup (``certificates.new_view_plan``).
  A replica waiting for a new view after 2f+1 view changes tries the next view after a timeout
  that doubles per failure.
- catch-up: every ``status_interval`` a replica broadcasts ``Status`` and retransmits its own
  in-flight messages. A peer that is ahead answers a lagging status with the ``NewView`` it missed
  and/or a ``StateReply`` (a stable checkpoint with its snapshot, then certified entries).
- evidence: two validly signed conflicting messages from one sender become an ``Evidence`` effect.

Durability: whenever something a replica must not forget changes (an accepted pre-prepare, a
prepared proof, a certificate, a checkpoint, a view), the first effect is ``Persist``.

``handle`` raises ``RemoteProtocolError`` for a message that is malformed, forged, or from a
non-member, and then has changed nothing. Any other exception is our bug: the replica moves to
``ERROR`` and every later call fails at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .certificates import (
    check_certified_entry,
    check_new_view,
    check_requests,
    check_signed_by_member,
    check_stable_checkpoint,
    check_view_change,
    new_view_plan,
)
from .codec import batch_digest
from .config import Committee, PbftConfig
from .errors import LocalProtocolError, RemoteProtocolError
from .events import (
    Broadcast,
    CancelTimer,
    ClientRequest,
    Commit,
    DurableSlot,
    DurableState,
    Effect,
    Event,
    Evidence,
    MessageReceived,
    Persist,
    Restarted,
    Send,
    SetTimer,
    StateInstalled,
    TimerFired,
    TimerKey,
    ViewEntered,
)
from .messages import (
    Certificate,
    CertifiedEntry,
    Checkpoint,
    CommitVote,
    Entry,
    Message,
    NewView,
    Prepare,
    PreparedProof,
    PrePrepare,
    Request,
    StableCheckpoint,
    StateReply,
    Status,
    ViewChange,
)
from .signing import Signer, Verifier, sign, verify
from .state import (
    ReplicaStatus,
    ReplicaTrigger,
    SlotPhase,
    SlotTrigger,
    next_replica_status,
    next_slot_phase,
)
from .statemachine import LedgerState, execute_batch, genesis, restore, snapshot, state_digest

__all__ = ["Replica"]

log = logging.getLogger(__name__)

#: Evidence keys remembered so one offence is reported once (bounded).
_MAX_EVIDENCE_KEYS = 4096


class _Slot:
    """One sequence number's progress in the current view (mutable, private)."""

    __slots__ = (
        "commits",
        "my_commit",
        "my_prepare",
        "phase",
        "pre_prepare",
        "prepared",
        "prepares",
        "seq",
        "view",
    )

    def __init__(self, seq: int, view: int) -> None:
        self.seq = seq
        self.view = view
        self.phase = SlotPhase.EMPTY
        self.pre_prepare: PrePrepare | None = None
        self.prepares: dict[bytes, Prepare] = {}
        self.commits: dict[bytes, CommitVote] = {}
        #: Highest-view prepared proof; survives view changes (it goes into our view change).
        self.prepared: PreparedProof | None = None
        self.my_prepare: Prepare | None = None
        self.my_commit: CommitVote | None = None

    def advance(self, trigger: SlotTrigger) -> None:
        self.phase = next_slot_phase(self.phase, trigger)


class Replica:
    """One validator's PBFT state. Feed it events with ``handle``; carry out what it returns."""

    def __init__(
        self,
        *,
        committee: Committee,
        config: PbftConfig,
        signer: Signer,
        verifier: Verifier,
    ) -> None:
        if not committee.is_member(signer.node_id):
            raise LocalProtocolError("a replica must be a member of its committee")
        self.committee = committee
        self.config = config
        self._signer = signer
        self._verifier = verifier
        self.me = signer.node_id
        self.status = ReplicaStatus.INIT
        self.view = 0
        self.ledger: LedgerState = genesis(committee)
        self.stable = StableCheckpoint(seq=0, snapshot=snapshot(self.ledger), proof=())
        #: The new view's low mark: pre-prepares at or below it are never accepted in this view.
        self._view_low = 0
        self._slots: dict[int, _Slot] = {}
        self._certified: dict[int, CertifiedEntry] = {}
        self._my_checkpoints: dict[int, tuple[bytes, bytes, Checkpoint]] = {}
        self._cp_votes: dict[int, dict[bytes, Checkpoint]] = {}
        #: client -> its newest pending request, in arrival order.
        self._pending: dict[bytes, Request] = {}
        self._inflight: set[tuple[bytes, int]] = set()
        self._next_seq = 0
        self._my_vc: ViewChange | None = None
        self._latest_vc: dict[bytes, ViewChange] = {}
        self._new_view: NewView | None = None
        #: Timeouts double with every view change (the paper's 2T, 4T, ...) and shrink only
        #: when progress is much faster than needed: a view whose primary is merely slow must
        #: get the time it needs, or replicas change views faster than any primary can commit.
        self._backoff = 0
        self._request_armed_at = 0.0
        #: Entries executed, and the longest wait for one, since the last view change or shrink.
        self._calm = 0
        self._max_gap = 0.0
        self._timer_gen = dict.fromkeys(TimerKey, 0)
        self._timer_armed = dict.fromkeys(TimerKey, False)
        self._evidence_seen: dict[tuple[object, ...], None] = {}
        self._effects: list[Effect] = []
        self._dirty = False
        self._now = 0.0
        self._on_event: dict[type[Event], Callable[[Any], None]] = {
            Restarted: self._on_restarted,
            MessageReceived: self._on_message_received,
            ClientRequest: self._on_client_request,
            TimerFired: self._on_timer,
        }
        self._on_timer_key: dict[TimerKey, Callable[[], None]] = {
            TimerKey.STATUS: self._status_timer,
            TimerKey.REQUEST: self._request_timer,
            TimerKey.VIEW_CHANGE: self._view_change_timer,
        }

    # -- read-only views for callers and tests ---------------------------------------------------

    @property
    def executed_seq(self) -> int:
        return self.ledger.seq

    @property
    def primary(self) -> bytes:
        return self.committee.primary(self.view)

    @property
    def is_primary(self) -> bool:
        return self.primary == self.me

    # -- the entry point --------------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Effect]:
        """Process one input at time ``now``; return the effects to carry out, in order."""
        if self.status is ReplicaStatus.ERROR:
            raise LocalProtocolError("replica is in ERROR after an earlier bug")
        if not isinstance(now, int | float) or now != now:
            raise LocalProtocolError("now must be a number")
        self._effects = []
        self._dirty = False
        self._now = float(now)
        try:
            handler = self._on_event.get(type(event))
            if handler is None:
                raise LocalProtocolError(f"unknown event {event!r}")
            if self.status is ReplicaStatus.INIT and type(event) is not Restarted:
                raise LocalProtocolError("the first event must be Restarted")
            handler(event)
            self._after_event()
        except RemoteProtocolError:
            # Every handler validates before it mutates, so nothing changed.
            if self._dirty or self._effects:
                self._fail()
                raise LocalProtocolError("state changed before a remote error") from None
            raise
        except LocalProtocolError:
            self._fail()
            raise
        except Exception as exc:
            self._fail()
            raise LocalProtocolError(f"bug in the PBFT replica: {exc!r}") from exc
        effects = self._effects
        if self._dirty:
            effects.insert(0, Persist(state=self.durable_state()))
        self._effects = []
        return effects

    def _fail(self) -> None:
        self.status = next_replica_status(self.status, ReplicaTrigger.FAIL)

    # -- effect helpers ---------------------------------------------------------------------------

    def _sign(self, msg: Message) -> Message:
        return sign(msg, self._signer)

    def _broadcast(self, msg: Message) -> None:
        self._effects.append(Broadcast(msg=msg))

    def _send(self, to: bytes, msg: Message) -> None:
        if to != self.me:
            self._effects.append(Send(to=to, msg=msg))

    def _set_timer(self, key: TimerKey, delay: float) -> None:
        self._timer_gen[key] += 1
        self._timer_armed[key] = True
        self._effects.append(
            SetTimer(key=key, at=self._now + delay, generation=self._timer_gen[key])
        )

    def _cancel_timer(self, key: TimerKey) -> None:
        if self._timer_armed[key]:
            self._timer_gen[key] += 1
            self._timer_armed[key] = False
            self._effects.append(CancelTimer(key=key, generation=self._timer_gen[key]))

    def _evidence(self, first: Message, second: Message, key: tuple[object, ...]) -> None:
        if key in self._evidence_seen:
            return
        self._evidence_seen[key] = None
        if len(self._evidence_seen) > _MAX_EVIDENCE_KEYS:
            del self._evidence_seen[next(iter(self._evidence_seen))]
        offender: bytes = first.sender  # type: ignore[attr-defined]
        self._effects.append(Evidence(offender=offender, first=first, second=second))

    # -- durability -------------------------------------------------------------------------------

    def durable_state(self) -> DurableState:
        slots = tuple(
            DurableSlot(
                seq=s.seq,
                view=s.view,
                pre_prepare=s.pre_prepare,
                prepared=s.prepared,
                sent_commit=s.my_commit is not None,
            )
            for s in sorted(self._slots.values(), key=lambda s: s.seq)
            if s.pre_prepare is not None or s.prepared is not None
        )
        return DurableState(
            view=self.view,
            in_view_change=self.status is ReplicaStatus.VIEW_CHANGE,
            view_change=self._my_vc,
            new_view=self._new_view,
            stable=self.stable,
            slots=slots,
            certified=tuple(self._certified[s] for s in sorted(self._certified)),
        )

    def _on_restarted(self, ev: Restarted) -> None:
        if self.status is not ReplicaStatus.INIT:
            raise LocalProtocolError("Restarted is only valid as the first event")
        d = ev.durable
        if d is None:
            self.status = next_replica_status(self.status, ReplicaTrigger.BOOT_NORMAL)
            self._dirty = True
        else:
            trigger = (
                ReplicaTrigger.BOOT_VIEW_CHANGE if d.in_view_change else ReplicaTrigger.BOOT_NORMAL
            )
            self.status = next_replica_status(self.status, trigger)
            self._restore(d)
        self._set_timer(TimerKey.STATUS, self.config.status_interval)

    def _restore(self, d: DurableState) -> None:
        try:
            self.ledger = restore(d.stable.snapshot)
        except RemoteProtocolError as exc:
            raise LocalProtocolError(f"durable snapshot is corrupt: {exc}") from None
        self.view = d.view
        self.stable = d.stable
        if self.stable.seq > 0:
            # A crash between Persist and the Commit effects after it can lose Commits of
            # entries that the persisted checkpoint already covers: say where execution resumes,
            # so the caller can fetch what its log lacks (with certificates) from any peer.
            digest = state_digest(self.stable.snapshot)
            self._effects.append(StateInstalled(seq=self.stable.seq, state_digest=digest))
        self._my_vc = d.view_change
        if d.view_change is not None:
            self._latest_vc[self.me] = d.view_change
        self._new_view = d.new_view
        if d.new_view is not None and d.new_view.view == d.view:
            self._view_low = new_view_plan(d.new_view.view_changes)[0]
        self._next_seq = self.stable.seq
        normal = not d.in_view_change
        for ds in d.slots:
            slot = _Slot(ds.seq, self.view)
            slot.prepared = ds.prepared
            self._slots[ds.seq] = slot
            pp = ds.pre_prepare
            if not normal or pp is None or ds.view != self.view:
                continue
            # Re-derive the votes we sent: signing is deterministic, so they are the same bytes.
            slot.pre_prepare = pp
            slot.advance(SlotTrigger.ACCEPT_PRE_PREPARE)
            self._inflight.update((r.client, r.request_id) for r in pp.batch)
            self._next_seq = max(self._next_seq, pp.seq)
            if pp.sender != self.me:
                slot.my_prepare = self._vote(Prepare, pp)
                slot.prepares[self.me] = slot.my_prepare
            if ds.sent_commit and ds.prepared is not None and ds.prepared.pre_prepare == pp:
                slot.advance(SlotTrigger.PREPARE_QUORUM)
                slot.my_commit = self._vote(CommitVote, pp)
                slot.commits[self.me] = slot.my_commit
        for ce in d.certified:
            self._certified[ce.entry.seq] = ce
        # Re-execute the certified suffix: Commit effects repeat (the caller is idempotent).
        self._execute_ready()
        self._next_seq = max(self._next_seq, self.ledger.seq, max(self._certified, default=0))

    # -- dispatch ---------------------------------------------------------------------------------

    def _on_message(self, msg: Message) -> None:
        t = type(msg)
        if t is Request:
            self._on_request(msg, local=False)  # type: ignore[arg-type]
        elif t is PrePrepare:
            self._on_pre_prepare(msg)  # type: ignore[arg-type]
        elif t is Prepare:
            self._on_prepare(msg)  # type: ignore[arg-type]
        elif t is CommitVote:
            self._on_commit_vote(msg)  # type: ignore[arg-type]
        elif t is Checkpoint:
            self._on_checkpoint(msg)  # type: ignore[arg-type]
        elif t is ViewChange:
            self._on_view_change(msg)  # type: ignore[arg-type]
        elif t is NewView:
            self._on_new_view(msg)  # type: ignore[arg-type]
        elif t is Status:
            self._on_status(msg)  # type: ignore[arg-type]
        elif t is StateReply:
            self._on_state_reply(msg)  # type: ignore[arg-type]
        else:
            raise RemoteProtocolError(f"unexpected message {t.__name__}")

    def _after_event(self) -> None:
        if self.status is ReplicaStatus.NORMAL and self.is_primary:
            self._maybe_propose()
        self._sync_request_timer()

    # -- requests ---------------------------------------------------------------------------------

    def _executed(self, req: Request) -> bool:
        return self.ledger.clients.get(req.client, 0) >= req.request_id

    def _on_request(self, req: Request, *, local: bool) -> None:
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
        while (
            self._next_seq + 1 <= self.stable.seq + cfg.window
            and self._next_seq - self.ledger.seq < cfg.max_inflight
        ):
            batch = []
            for req in self._pending.values():
                if (req.client, req.request_id) not in self._inflight and not self._executed(req):
                    batch.append(req)
                    if len(batch) >= cfg.max_batch:
                        break
            if not batch:
                return
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
            self._accept_pre_prepare(self._slot(seq), pp)  # type: ignore[arg-type]
            self._broadcast(pp)

    def _sync_request_timer(self) -> None:
        want = self.status is ReplicaStatus.NORMAL and bool(self._pending)
        if want and not self._timer_armed[TimerKey.REQUEST]:
            self._set_request_timer()
        elif not want:
            self._cancel_timer(TimerKey.REQUEST)

    # -- normal case ------------------------------------------------------------------------------

    def _set_request_timer(self) -> None:
        self._request_armed_at = self._now
        self._set_timer(TimerKey.REQUEST, self._request_timeout())

    def _in_window(self, seq: int) -> bool:
        return max(self.stable.seq, self._view_low) < seq <= self.stable.seq + self.config.window

    def _slot(self, seq: int) -> _Slot:
        slot = self._slots.get(seq)
        if slot is None:
            slot = self._slots[seq] = _Slot(seq, self.view)
        return slot

    def _vote(self, kind: type[Prepare] | type[CommitVote], pp: PrePrepare) -> Prepare | CommitVote:
        msg = kind(view=pp.view, seq=pp.seq, digest=pp.digest, sender=self.me)
        return self._sign(msg)  # type: ignore[return-value]

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

    def _accept_pre_prepare(self, slot: _Slot, pp: PrePrepare) -> None:
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

    def _progress(self, slot: _Slot) -> None:
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
            self.ledger, results = execute_batch(self.ledger, entry.seq, entry.batch)
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

    # -- checkpoints ------------------------------------------------------------------------------

    def _make_checkpoint(self, seq: int) -> None:
        snap = snapshot(self.ledger)
        digest = state_digest(snap)
        vote = self._sign(Checkpoint(seq=seq, state_digest=digest, sender=self.me))
        self._my_checkpoints[seq] = (digest, snap, vote)  # type: ignore[assignment]
        self._broadcast(vote)
        self._cp_votes.setdefault(seq, {})[self.me] = vote  # type: ignore[assignment]
        self._check_stable(seq)

    def _on_checkpoint(self, cp: Checkpoint) -> None:
        if cp.sender == self.me or cp.seq % self.config.checkpoint_interval != 0:
            return
        if not self.stable.seq < cp.seq <= self.stable.seq + self.config.window:
            return  # far ahead: our status brings state transfer instead
        votes = self._cp_votes.get(cp.seq, {})
        old = votes.get(cp.sender)
        if old is not None and old.state_digest == cp.state_digest:
            return
        check_signed_by_member(self.committee, self._verifier, cp)
        if old is not None:
            self._evidence(old, cp, ("checkpoint", cp.sender, cp.seq))
            return
        self._cp_votes.setdefault(cp.seq, {})[cp.sender] = cp
        self._check_stable(cp.seq)

    def _check_stable(self, seq: int) -> None:
        mine = self._my_checkpoints.get(seq)
        if mine is None or seq <= self.stable.seq:
            return  # we have not executed seq yet: state transfer or execution gets us there
        digest, snap, _ = mine
        votes = sorted(
            (c for c in self._cp_votes.get(seq, {}).values() if c.state_digest == digest),
            key=lambda c: c.sender,
        )
        if len(votes) < self.committee.quorum:
            others = [c for c in self._cp_votes.get(seq, {}).values() if c.state_digest != digest]
            if len({c.sender for c in others}) >= self.committee.quorum:
                raise LocalProtocolError(f"our state at {seq} differs from a quorum's")
            return
        proof = tuple(votes[: self.committee.quorum])
        self._set_stable(StableCheckpoint(seq=seq, snapshot=snap, proof=proof))

    def _set_stable(self, cp: StableCheckpoint) -> None:
        self.stable = cp
        self._dirty = True
        seq = cp.seq
        for table in (self._slots, self._certified, self._my_checkpoints, self._cp_votes):
            for s in [s for s in table if s <= seq]:
                del table[s]

    # -- view change ------------------------------------------------------------------------------

    def _vc_timeout(self) -> float:
        cfg = self.config
        return min(cfg.view_change_timeout * 2**self._backoff, cfg.max_view_change_timeout)

    def _request_timeout(self) -> float:
        cfg = self.config
        return min(cfg.request_timeout * 2**self._backoff, cfg.max_view_change_timeout)

    def _on_message_received(self, ev: MessageReceived) -> None:
        if not isinstance(ev.msg, Message):
            raise LocalProtocolError("MessageReceived needs a PBFT Message")
        self._on_message(ev.msg)

    def _on_client_request(self, ev: ClientRequest) -> None:
        self._on_request(ev.request, local=True)

    def _on_timer(self, ev: TimerFired) -> None:
        if type(ev.key) is not TimerKey:
            raise LocalProtocolError(f"not a PBFT timer: {ev.key!r}")
        if ev.generation != self._timer_gen[ev.key] or not self._timer_armed[ev.key]:
            return  # stale: the timer was reset or cancelled since
        self._timer_armed[ev.key] = False
        self._on_timer_key[ev.key]()

    def _status_timer(self) -> None:
        self._status_tick()
        self._set_timer(TimerKey.STATUS, self.config.status_interval)

    def _request_timer(self) -> None:
        if self.status is ReplicaStatus.NORMAL:
            log.debug("request timeout in view %d: suspecting the primary", self.view)
            self._start_view_change(self.view + 1)

    def _view_change_timer(self) -> None:
        if self.status is ReplicaStatus.VIEW_CHANGE:
            self._start_view_change(self.view + 1)

    def _reset_slots_for_view(self) -> None:
        for seq in list(self._slots):
            slot = self._slots[seq]
            if slot.view == self.view:
                continue
            slot.advance(SlotTrigger.NEW_VIEW)
            slot.view = self.view
            slot.pre_prepare = None
            slot.prepares = {}
            slot.commits = {}
            slot.my_prepare = None
            slot.my_commit = None
            if slot.prepared is None:
                del self._slots[seq]
        self._inflight.clear()

    def _start_view_change(self, target: int) -> None:
        if target <= self.view:
            raise LocalProtocolError("views never go back")
        self.status = next_replica_status(self.status, ReplicaTrigger.START_VIEW_CHANGE)
        self.view = target
        self._backoff = min(self._backoff + 1, 16)
        self._calm, self._max_gap = 0, 0.0
        self._reset_slots_for_view()
        top = self.stable.seq + self.config.window
        prepared = tuple(
            s.prepared
            for s in sorted(self._slots.values(), key=lambda s: s.seq)
            if s.prepared is not None and self.stable.seq < s.seq <= top
        )
        vc = self._sign(
            ViewChange(
                new_view=target,
                stable_seq=self.stable.seq,
                checkpoint_proof=self.stable.proof,
                prepared=prepared,
                sender=self.me,
            )
        )
        self._my_vc = vc  # type: ignore[assignment]
        self._latest_vc[self.me] = vc  # type: ignore[assignment]
        for s in [s for s, v in self._latest_vc.items() if v.new_view < target]:
            del self._latest_vc[s]
        self._dirty = True
        self._cancel_timer(TimerKey.REQUEST)
        self._cancel_timer(TimerKey.VIEW_CHANGE)
        self._broadcast(vc)
        self._view_change_rules()

    def _on_view_change(self, vc: ViewChange) -> None:
        if vc.sender == self.me:
            return
        in_vc = self.status is ReplicaStatus.VIEW_CHANGE
        if vc.new_view < self.view or (vc.new_view == self.view and not in_vc):
            # The sender is behind us: hand it the new view we run, if we have one.
            if self.status is ReplicaStatus.NORMAL and self._new_view is not None:
                check_signed_by_member(self.committee, self._verifier, vc)
                self._send(vc.sender, self._new_view)
            return
        old = self._latest_vc.get(vc.sender)
        if old is not None and old.new_view >= vc.new_view:
            return
        check_view_change(self.committee, self._verifier, vc, self.config.window)
        self._latest_vc[vc.sender] = vc
        self._view_change_rules()

    def _view_change_rules(self) -> None:
        f = self.committee.f
        higher = sorted(
            (
                v.new_view
                for s, v in self._latest_vc.items()
                if s != self.me and v.new_view > self.view
            ),
            reverse=True,
        )
        if len(higher) >= f + 1:
            # f+1 replicas (so at least one correct) are past our view: join the lowest of them.
            self._start_view_change(higher[f])
            return
        if self.status is not ReplicaStatus.VIEW_CHANGE:
            return
        # The paper starts the new-view timer at 2f+1 view changes for our view. We count those
        # for our view *or later*: a replica that already moved further on (its view change for
        # our view superseded, or forgotten in a crash) still says "the old primary is gone", and
        # without this rule replicas split across two views wait for each other forever.
        moved_on = sum(1 for v in self._latest_vc.values() if v.new_view >= self.view)
        if moved_on >= self.committee.quorum and not self._timer_armed[TimerKey.VIEW_CHANGE]:
            self._set_timer(TimerKey.VIEW_CHANGE, self._vc_timeout())
        vcs = [v for v in self._latest_vc.values() if v.new_view == self.view]
        if len(vcs) >= self.committee.quorum and self.is_primary:
            self._build_new_view(vcs)

    def _build_new_view(self, vcs: list[ViewChange]) -> None:
        chosen = tuple(sorted(vcs, key=lambda v: v.sender)[: self.committee.quorum])
        low, plan = new_view_plan(chosen)
        empty = batch_digest(())
        pps = []
        for seq, old in plan.items():
            batch = () if old is None else old.batch
            digest = empty if old is None else old.digest
            pp = PrePrepare(view=self.view, seq=seq, digest=digest, batch=batch, sender=self.me)
            pps.append(self._sign(pp))
        nv = self._sign(
            NewView(view=self.view, view_changes=chosen, pre_prepares=tuple(pps), sender=self.me)
        )
        self._broadcast(nv)
        self._enter_view(nv, low)  # type: ignore[arg-type]

    def _on_new_view(self, nv: NewView) -> None:
        if nv.view < self.view or (nv.view == self.view and self.status is ReplicaStatus.NORMAL):
            return
        low = check_new_view(self.committee, self._verifier, nv, self.config.window)
        self._enter_view(nv, low)

    def _enter_view(self, nv: NewView, low: int) -> None:
        self.status = next_replica_status(self.status, ReplicaTrigger.ENTER_VIEW)
        self.view = nv.view
        self._new_view = nv
        self._view_low = low
        self._my_vc = None
        for s in [s for s, v in self._latest_vc.items() if v.new_view <= self.view]:
            del self._latest_vc[s]
        self._cancel_timer(TimerKey.VIEW_CHANGE)
        self._reset_slots_for_view()
        self._dirty = True
        self._effects.append(ViewEntered(view=self.view, primary=self.primary))
        last = low
        for pp in nv.pre_prepares:
            last = max(last, pp.seq)
            done = self._certified.get(pp.seq)
            if done is not None and done.entry.digest != pp.digest:
                raise LocalProtocolError(f"new view {nv.view} contradicts committed seq {pp.seq}")
            if self._in_window(pp.seq):
                slot = self._slot(pp.seq)
                self._accept_pre_prepare(slot, pp)
        self._next_seq = max(
            last, self.stable.seq, self.ledger.seq, max(self._certified, default=0)
        )
        for seq in sorted(self._slots):
            self._progress(self._slots[seq])

    # -- status, retransmission and state transfer ------------------------------------------------

    def _status_tick(self) -> None:
        in_vc = self.status is ReplicaStatus.VIEW_CHANGE
        self._broadcast(
            self._sign(
                Status(
                    view=self.view,
                    in_view_change=in_vc,
                    executed_seq=self.ledger.seq,
                    stable_seq=self.stable.seq,
                    sender=self.me,
                )
            )
        )
        if in_vc:
            if self._my_vc is not None:
                self._broadcast(self._my_vc)
            return
        for seq in sorted(self._slots):
            slot = self._slots[seq]
            if seq <= self.ledger.seq or slot.view != self.view:
                continue
            if slot.pre_prepare is not None and slot.pre_prepare.sender == self.me:
                self._broadcast(slot.pre_prepare)
            for vote in (slot.my_prepare, slot.my_commit):
                if vote is not None:
                    self._broadcast(vote)
        unstable = [s for s in self._my_checkpoints if s > self.stable.seq]
        if unstable:
            self._broadcast(self._my_checkpoints[max(unstable)][2])
        if not self.is_primary:
            waiting = self._resend_candidates()
            for req in waiting:
                self._send(self.primary, req)

    def _resend_candidates(self) -> list[Request]:
        out = []
        for req in self._pending.values():
            if (req.client, req.request_id) not in self._inflight:
                out.append(req)
                if len(out) >= self.config.max_batch:
                    break
        return out

    def _on_status(self, st: Status) -> None:
        if st.sender == self.me:
            return
        behind_view = st.view < self.view or (st.view == self.view and st.in_view_change)
        helps_view = self.status is ReplicaStatus.NORMAL and self._new_view is not None
        # A peer whose stable checkpoint lags cannot slide its window: send it our proof too.
        behind_log = st.executed_seq < self.ledger.seq or st.stable_seq < self.stable.seq
        if not (behind_log or (behind_view and helps_view)):
            return
        check_signed_by_member(self.committee, self._verifier, st)
        if behind_view and helps_view:
            self._send(st.sender, self._new_view)  # type: ignore[arg-type]
        if behind_log:
            self._send_state(st.sender, st.executed_seq, st.stable_seq)

    def _send_state(self, to: bytes, their_seq: int, their_stable: int) -> None:
        checkpoint = None
        start = their_seq + 1
        if their_stable < self.stable.seq and self.stable.seq > 0:
            checkpoint = self.stable
            start = max(start, self.stable.seq + 1)
        entries = []
        for seq in range(start, min(start + self.config.max_transfer_entries, self.ledger.seq + 1)):
            ce = self._certified.get(seq)
            if ce is None:
                break
            entries.append(ce)
        if checkpoint is None and not entries:
            return
        reply = StateReply(checkpoint=checkpoint, entries=tuple(entries), sender=self.me)
        self._send(to, self._sign(reply))

    def _on_state_reply(self, sr: StateReply) -> None:
        cp = sr.checkpoint
        install = cp is not None and cp.seq > self.ledger.seq
        # A newer stable checkpoint at or below what we executed only slides our window.
        adopt = cp is not None and self.stable.seq < cp.seq <= self.ledger.seq
        useful = install or adopt or any(e.entry.seq > self.ledger.seq for e in sr.entries)
        if not useful:
            return
        check_signed_by_member(self.committee, self._verifier, sr)
        new_state = None
        if cp is not None and (install or adopt):
            check_stable_checkpoint(self.committee, self._verifier, cp)
        if install:
            assert cp is not None
            new_state = restore(cp.snapshot)
            if new_state.seq != cp.seq:
                raise RemoteProtocolError("snapshot seq differs from its checkpoint")
        base = cp.seq if install else self.ledger.seq  # type: ignore[union-attr]
        accepted: list[CertifiedEntry] = []
        for ce in sr.entries:
            if ce.entry.seq <= base:
                continue
            if ce.entry.seq != base + len(accepted) + 1:
                break  # a gap: keep the contiguous prefix
            check_certified_entry(self.committee, self._verifier, ce)
            accepted.append(ce)
        # Everything is checked: now mutate.
        if adopt:
            assert cp is not None
            mine = self._my_checkpoints.get(cp.seq)
            if mine is not None and mine[0] != state_digest(cp.snapshot):
                raise LocalProtocolError(f"our state at {cp.seq} differs from a stable checkpoint")
            self._set_stable(cp)
        if install:
            assert cp is not None and new_state is not None
            self._install(cp, new_state)
        for ce in accepted:
            if ce.entry.seq not in self._certified:
                self._certified[ce.entry.seq] = ce
                self._dirty = True
        self._execute_ready()

    def _install(self, cp: StableCheckpoint, state: LedgerState) -> None:
        log.info("state transfer: installing checkpoint %d", cp.seq)
        self.ledger = state
        self._set_stable(cp)
        # Entries we certified above the checkpoint stay; everything below is now settled.
        for client in [c for c, r in self._pending.items() if self._executed(r)]:
            del self._pending[client]
        self._next_seq = max(self._next_seq, cp.seq)
        self._effects.append(StateInstalled(seq=cp.seq, state_digest=state_digest(cp.snapshot)))
