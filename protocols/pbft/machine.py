"""The PBFT replica as a sans-I/O machine: ``Replica.handle(event, now) -> list[Effect]``.

Castro & Liskov's protocol with signatures (not MACs), so every proof travels as signed messages.
``Replica`` is the one machine; its concerns live in their own modules and it combines them:

- :mod:`.replica_core`: the replica's state, the effect helpers and the read-only properties;
  evidence of equivocation;
- :mod:`.normal_case`: requests, pre-prepare/prepare/commit, batching and execution;
- :mod:`.checkpoints`: checkpoints, status with retransmission, state transfer (catch-up);
- :mod:`.view_change`: view-change/new-view and the timers that start them;
- this module: the entry point, its dispatch tables, and durability (the state a replica
  persists and how it restarts from it).

Durability: whenever something a replica must not forget changes (an accepted pre-prepare, a
prepared proof, a certificate, a checkpoint, a view), the first effect is ``Persist``.

``handle`` raises ``RemoteProtocolError`` for a message that is malformed, forged, or from a
non-member, and then has changed nothing. Any other exception is our bug: the replica moves to
``ERROR`` and every later call fails at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .certificates import new_view_plan
from .checkpoints import Checkpoints
from .config import Committee, PbftConfig
from .errors import LocalProtocolError, RemoteProtocolError
from .events import (
    ClientRequest,
    DurableSlot,
    DurableState,
    Effect,
    Event,
    MessageReceived,
    Persist,
    PrimarySuspected,
    Restarted,
    StateInstalled,
    TimerFired,
    TimerKey,
)
from .messages import (
    Checkpoint,
    CommitVote,
    Message,
    NewView,
    Prepare,
    PrePrepare,
    Request,
    StateReply,
    Status,
    ViewChange,
)
from .normal_case import NormalCase
from .replica_core import Slot
from .signing import Signer, Verifier
from .state import ReplicaStatus, ReplicaTrigger, SlotTrigger, next_replica_status
from .statemachine import LedgerState, restore, state_digest
from .view_change import ViewChanges

__all__ = ["Replica"]


class Replica(NormalCase, Checkpoints, ViewChanges):
    """One validator's PBFT state. Feed it events with ``handle``; carry out what it returns.

    Read-only for callers: ``status``, ``view``, ``ledger``, ``stable``, ``executed_seq``,
    ``primary``, ``is_primary`` and ``durable_state()``. The handlers the dispatch tables name
    come from the concern mixins; the state they share is ``ReplicaCore``'s.
    """

    def __init__(
        self,
        *,
        committee: Committee,
        config: PbftConfig,
        signer: Signer,
        verifier: Verifier,
        base: LedgerState | None = None,
    ) -> None:
        """``base``: the state the epoch starts from (the ledger after the previous committee's
        last entry, whose committee is ``committee``); genesis when None."""
        super().__init__(
            committee=committee, config=config, signer=signer, verifier=verifier, base=base
        )
        self._on_event: dict[type[Event], Callable[[Any], None]] = {
            Restarted: self._on_restarted,
            MessageReceived: self._on_message_received,
            ClientRequest: self._on_client_request,
            TimerFired: self._on_timer,
            PrimarySuspected: self._on_primary_suspected,
        }
        self._on_message_type: dict[type[Message], Callable[[Any], None]] = {
            Request: self._on_request,
            PrePrepare: self._on_pre_prepare,
            Prepare: self._on_prepare,
            CommitVote: self._on_commit_vote,
            Checkpoint: self._on_checkpoint,
            ViewChange: self._on_view_change,
            NewView: self._on_new_view,
            Status: self._on_status,
            StateReply: self._on_state_reply,
        }
        self._on_timer_key: dict[TimerKey, Callable[[], None]] = {
            TimerKey.STATUS: self._status_timer,
            TimerKey.REQUEST: self._request_timer,
            TimerKey.VIEW_CHANGE: self._view_change_timer,
        }

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

    # -- dispatch ---------------------------------------------------------------------------------

    def _on_message_received(self, ev: MessageReceived) -> None:
        msg = ev.msg
        if not isinstance(msg, Message):
            raise LocalProtocolError("MessageReceived needs a PBFT Message")
        handler = self._on_message_type.get(type(msg))
        if handler is None:
            raise RemoteProtocolError(f"unexpected message {type(msg).__name__}")
        if getattr(msg, "epoch", self.committee.epoch) != self.committee.epoch:
            return  # another committee's message: never counted here
        handler(msg)

    def _on_client_request(self, ev: ClientRequest) -> None:
        self._on_request(ev.request, local=True)

    def _on_timer(self, ev: TimerFired) -> None:
        if type(ev.key) is not TimerKey:
            raise LocalProtocolError(f"not a PBFT timer: {ev.key!r}")
        if ev.generation != self._timer_gen[ev.key] or not self._timer_armed[ev.key]:
            return  # stale: the timer was reset or cancelled since
        self._timer_armed[ev.key] = False
        self._on_timer_key[ev.key]()

    def _after_event(self) -> None:
        if self.status is ReplicaStatus.NORMAL and self.is_primary and not self.retired:
            self._maybe_propose()
        self._sync_request_timer()

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
            slot = Slot(ds.seq, self.view)
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
