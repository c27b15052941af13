"""The replica's state and the helpers every concern of the machine shares.

``ReplicaCore`` holds everything a PBFT replica knows (the view, the log slots, the certified
entries, checkpoint votes, pending requests, view-change records, timer generations) and the
helpers that turn decisions into effects: sign, send, broadcast, set or cancel a timer, report
evidence. The concerns are mixins on top of it (:mod:`.normal_case`, :mod:`.checkpoints`,
:mod:`.view_change`) and :class:`~.machine.Replica` combines them with the entry point. They
share one object rather than talking through collaborators, so the hot paths (a vote arrives,
a slot progresses) pay no indirection and every attribute keeps a single owner: this class.

Evidence: two validly signed conflicting messages from one sender become an ``Evidence`` effect,
reported once per offence (the keys are remembered, bounded).
"""

from __future__ import annotations

import dataclasses

from .config import Committee, PbftConfig
from .errors import LocalProtocolError
from .events import (
    Broadcast,
    CancelTimer,
    Effect,
    Evidence,
    Send,
    SetTimer,
    TimerKey,
)
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
from .signing import Signer, Verifier, sign
from .state import ReplicaStatus, SlotPhase, SlotTrigger, next_slot_phase
from .statemachine import LedgerState, genesis, snapshot

__all__ = ["ReplicaCore", "Slot"]

#: Evidence keys remembered so one offence is reported once (bounded).
_MAX_EVIDENCE_KEYS = 4096


class Slot:
    """One sequence number's progress in the current view (mutable, private to the replica)."""

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


class ReplicaCore:
    """A replica's state and shared helpers; :class:`~.machine.Replica` is the machine."""

    def __init__(
        self,
        *,
        committee: Committee,
        config: PbftConfig,
        signer: Signer,
        verifier: Verifier,
        base: LedgerState | None = None,
    ) -> None:
        if not committee.is_member(signer.node_id):
            raise LocalProtocolError("a replica must be a member of its committee")
        if base is None:
            base = genesis(committee)
        if base.committee != committee or base.pending is not None:
            raise LocalProtocolError("an epoch starts from a state whose committee is its own")
        self.committee = committee
        self.config = config
        self._signer = signer
        self._verifier = verifier
        self.me = signer.node_id
        self.status = ReplicaStatus.INIT
        self.view = 0
        self.ledger: LedgerState = base
        #: The epoch starts after this seq (0 for genesis): its state is every replica's first
        #: stable checkpoint, needing no proof (it is derived from the certified log).
        self.base = base.seq
        self.stable = StableCheckpoint(seq=base.seq, snapshot=snapshot(base), proof=())
        #: The new view's low mark: pre-prepares at or below it are never accepted in this view.
        self._view_low = 0
        self._slots: dict[int, Slot] = {}
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
        #: The effects of the event being handled, and whether durable state changed in it.
        self._effects: list[Effect] = []
        self._dirty = False
        self._now = 0.0

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

    @property
    def retired(self) -> bool:
        """This epoch's last entry has executed: the replica no longer votes or proposes; it
        only answers peers that lag (status, state transfer) until its caller stops it."""
        return self.ledger.committee.epoch != self.committee.epoch

    @property
    def end(self) -> int | None:
        """The first seq the next committee orders, once the change is committed: this epoch
        never accepts, proposes or votes for a seq at or above it."""
        if self.ledger.pending is not None:
            return self.ledger.pending[1]
        if self.retired:
            return self.ledger.seq + 1
        return None

    # -- effect helpers ---------------------------------------------------------------------------

    def _sign(self, msg: Message) -> Message:
        if getattr(msg, "epoch", self.committee.epoch) != self.committee.epoch:
            msg = dataclasses.replace(msg, epoch=self.committee.epoch)  # type: ignore[type-var]
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

    # -- small helpers the concerns share ---------------------------------------------------------

    def _executed(self, req: Request) -> bool:
        return self.ledger.clients.get(req.client, 0) >= req.request_id

    def _in_window(self, seq: int) -> bool:
        end = self.end
        if end is not None and seq >= end:
            return False
        return max(self.stable.seq, self._view_low) < seq <= self.stable.seq + self.config.window

    def _slot(self, seq: int) -> Slot:
        slot = self._slots.get(seq)
        if slot is None:
            slot = self._slots[seq] = Slot(seq, self.view)
        return slot

    def _vote(self, kind: type[Prepare] | type[CommitVote], pp: PrePrepare) -> Prepare | CommitVote:
        msg = kind(view=pp.view, seq=pp.seq, digest=pp.digest, sender=self.me)
        return self._sign(msg)  # type: ignore[return-value]

    # -- steps one concern takes on behalf of another ---------------------------------------------
    # Declared here so each mixin reads on its own; the mixin named in each docstring overrides
    # them, and Replica's method order puts every mixin before this class.

    def _accept_pre_prepare(self, slot: Slot, pp: PrePrepare) -> None:
        """Accept ``pp`` into ``slot`` and send our prepare (:mod:`.normal_case`)."""
        raise NotImplementedError

    def _progress(self, slot: Slot) -> None:
        """Move ``slot`` on as far as its votes allow (:mod:`.normal_case`)."""
        raise NotImplementedError

    def _execute_ready(self) -> None:
        """Execute every certified entry next in line (:mod:`.normal_case`)."""
        raise NotImplementedError

    def _make_checkpoint(self, seq: int) -> None:
        """Sign and broadcast our checkpoint at ``seq`` (:mod:`.checkpoints`)."""
        raise NotImplementedError
