"""Checkpoints, status and state transfer: how the PBFT replica's log stays bounded and how a
replica that fell behind catches up.

- checkpoints: after every K executed entries a replica signs its state digest; 2f+1 matching
  votes make the checkpoint *stable*, the log below it is dropped and the window slides.
- catch-up: every ``status_interval`` a replica broadcasts ``Status`` and retransmits its own
  in-flight messages. A peer that is ahead answers a lagging status with the ``NewView`` it missed
  and/or a ``StateReply`` (a stable checkpoint with its snapshot, then certified entries).
"""

from __future__ import annotations

import logging

from .certificates import check_certified_entry, check_signed_by_member, check_stable_checkpoint
from .errors import LocalProtocolError, RemoteProtocolError
from .events import StateInstalled, TimerKey
from .messages import CertifiedEntry, Checkpoint, Request, StableCheckpoint, StateReply, Status
from .replica_core import ReplicaCore
from .state import ReplicaStatus
from .statemachine import LedgerState, restore, snapshot, state_digest

__all__ = ["Checkpoints"]

log = logging.getLogger(__name__)


class Checkpoints(ReplicaCore):
    """Checkpoint votes and stability, the status broadcast with retransmission, state transfer."""

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

    # -- status, retransmission and state transfer ------------------------------------------------

    def _status_timer(self) -> None:
        self._status_tick()
        self._set_timer(TimerKey.STATUS, self.config.status_interval)

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
            check_stable_checkpoint(self.committee, self._verifier, cp, self.base)
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
