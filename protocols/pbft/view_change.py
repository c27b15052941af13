"""View change of the PBFT replica: suspecting the primary, ``ViewChange`` and ``NewView``.

A backup whose pending request sees no progress for ``request_timeout`` sends ``ViewChange`` for
view v+1 (stable checkpoint + prepared proofs). f+1 view changes for higher views pull a replica
along. With 2f+1 view changes for its view the new primary sends ``NewView`` whose pre-prepares
are *recomputed* by every backup (``certificates.new_view_plan``). A replica waiting for a new
view after 2f+1 view changes tries the next view after a timeout that doubles per failure.
"""

from __future__ import annotations

import logging

from .certificates import check_new_view, check_signed_by_member, check_view_change, new_view_plan
from .codec import batch_digest
from .errors import LocalProtocolError
from .events import PrimarySuspected, TimerKey, ViewEntered
from .messages import NewView, PrePrepare, ViewChange
from .replica_core import ReplicaCore
from .state import ReplicaStatus, ReplicaTrigger, SlotTrigger, next_replica_status

__all__ = ["ViewChanges"]

log = logging.getLogger(__name__)


class ViewChanges(ReplicaCore):
    """The request and view-change timers, view changes, and building or entering a new view."""

    # -- timers -----------------------------------------------------------------------------------

    def _vc_timeout(self) -> float:
        cfg = self.config
        return min(cfg.view_change_timeout * 2**self._backoff, cfg.max_view_change_timeout)

    def _request_timer(self) -> None:
        if self.status is ReplicaStatus.NORMAL and not self.retired:
            log.debug("request timeout in view %d: suspecting the primary", self.view)
            self._start_view_change(self.view + 1)

    def _on_primary_suspected(self, ev: PrimarySuspected) -> None:
        if (
            self.status is ReplicaStatus.NORMAL
            and not self.retired
            and ev.node == self.primary != self.me
        ):
            log.info("the failure detector declared primary of view %d dead", self.view)
            self._start_view_change(self.view + 1)

    def _view_change_timer(self) -> None:
        if self.status is ReplicaStatus.VIEW_CHANGE and not self.retired:
            self._start_view_change(self.view + 1)

    # -- view change and new view -----------------------------------------------------------------

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
        if self.retired:
            return  # this epoch is over: its views no longer matter
        old = self._latest_vc.get(vc.sender)
        if old is not None and old.new_view >= vc.new_view:
            return
        check_view_change(self.committee, self._verifier, vc, self.config.window, self.base)
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
        if self.retired:
            return
        low = check_new_view(self.committee, self._verifier, nv, self.config.window, self.base)
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
