"""The trainer's side of a round and the validators' commit phase (commit then reveal), a part
of :class:`~.machine.RoundsMachine` (its state is set up there).

A trainer commits to its update (a signed hash of the key and a salt) before anyone reveals; the
commit phase closes once every assigned trainer committed or the window ended, and only then
are keys revealed: a reveal counts only with a matching commitment taken before the close, so
no trainer can copy an update it has seen.
"""

from __future__ import annotations

from p2pnode_protocols.machine import (
    Broadcast,
    Effect,
    Send,
)

from .events import (
    RoundPhase,
    Train,
    TrainingDone,
)
from .ledger import JobState
from .messages import (
    CommitClosed,
    Commitment,
    UpdateNotice,
    commitment_digest,
    sign_commitment,
    sign_notice,
)
from .spec import MAX_PARTICIPANTS
from .verify import salt_for

__all__ = ["CommitPhase"]


class CommitPhase:
    # -- trainers --------------------------------------------------------------------------------

    def _trained(self, e: TrainingDone, now: float) -> list[Effect]:
        if not e.key:
            self._count("training_failed")
            out: list[Effect] = [
                RoundPhase(job=e.job, round=e.round, phase="training", detail=e.error)
            ]
            # The task is still ours: a base model nobody served within the fetch timeout
            # (a partition, a restarting validator) is there a moment later. Try again after a
            # pause, a few times; a reassignment of the round trains it again in any case. Left
            # alone, a round whose every trainer failed would gather nothing and, reassigned to
            # the same nodes, never start training again (a chaos run stalled so for minutes).
            key = (e.job, e.round)
            self.training.discard(key)
            tries = self._retrains.get(key, 0)
            if tries < self.config.max_retrains:
                self._retrains[key] = tries + 1
                out.append(
                    self._set_timer("retrain", e.job, e.round, now + self.config.retrain_delay)
                )
            return out
        job = self.ledger.jobs.get(e.job)
        if job is None or not job.spec.commit_reveal:
            notice = sign_notice(self.signer, e.job, e.round, e.key, e.size, e.samples)
            self._told[(e.job, e.round)] = [notice]
            out: list[Effect] = [Broadcast(msg=notice)]
            if self.is_validator:
                out += self._notice(notice, now, local=True)
            return out
        # Commit now, reveal once the commit phase closed (CommitClosed from a validator, or
        # our own clock a little after the window).
        salt = salt_for(self.signer, e.job, e.round, e.key)
        notice = sign_notice(self.signer, e.job, e.round, e.key, e.size, e.samples, salt)
        digest = commitment_digest(e.job, e.round, self.me, e.key, salt)
        c = sign_commitment(self.signer, e.job, e.round, digest)
        key = (e.job, e.round)
        self._reveals[key] = notice
        self._told[key] = [c]
        out = [Broadcast(msg=c)]
        if self.is_validator:
            out += self._commitment(c, now, local=True)
        if e.round < job.round:
            # The round committed without us: its commit phase is over everywhere, so reveal
            # now (validators refuse a late reveal of a key revealed before).
            return out + self._reveal(e.job, e.round, now)
        window = job.spec.commit_window * job.spec.round_deadline
        at = max(now, self._commit_started.get(key, now) + window) + self.config.reveal_grace
        if key in self._reveals:  # not revealed by our own close just now
            out.append(self._set_timer("reveal", e.job, e.round, at))
        return out

    def _retrain(self, job: JobState, rnd: int) -> list[Effect]:
        """The retry of a failed task, if it is still this node's and not under way."""
        key = (job.id, rnd)
        shard = job.shard_of.get((self.me, rnd))
        if shard is None or key in self.training or key in self._told:
            return []
        self.training.add(key)
        self._count("training_retried")
        return [Train(job=job.id, round=rnd, shard=shard, base_key=job.model_key)]

    def _tell_again(self, job: JobState, rnd: int, now: float) -> list[Effect]:
        """The round was reassigned (to us again, among others): what we told the validators
        may have come too late (a commitment after the commit phase closed is refused, and its
        reveal with it), and the reassignment reopened the phase. Commit again, and reveal once
        the new phase closes."""
        key = (job.id, rnd)
        told = self._told.get(key)
        if not told:
            return []
        commitments = [m for m in told if isinstance(m, Commitment)]
        if not job.spec.commit_reveal or not commitments:
            return [Broadcast(msg=m) for m in told]
        notices = [m for m in told if isinstance(m, UpdateNotice)]
        if notices and key not in self._reveals:
            self._reveals[key] = notices[-1]
        self._told[key] = commitments
        out: list[Effect] = [Broadcast(msg=c) for c in commitments]
        if self.is_validator:
            for c in commitments:
                out += self._commitment(c, now, local=True)
        if key in self._reveals:
            window = job.spec.commit_window * job.spec.round_deadline
            at = now + window + self.config.reveal_grace
            out.append(self._set_timer("reveal", job.id, rnd, at))
        return out

    def _reveal(self, job: str, rnd: int, now: float) -> list[Effect]:
        notice = self._reveals.pop((job, rnd), None)
        if notice is None:
            return []
        self._told.setdefault((job, rnd), []).append(notice)
        out: list[Effect] = [Broadcast(msg=notice)]
        if self.is_validator:
            out += self._notice(notice, now, local=True)
        return out

    # -- validators: the commit phase ------------------------------------------------------------

    def _commitment(
        self, c: Commitment, now: float, local: bool = False, relay: bool = False
    ) -> list[Effect]:
        job = self.ledger.jobs.get(c.job)
        if job is None or job.status != "running" or not job.spec.commit_reveal:
            self._count("commitment_unexpected")
            return []
        key = (c.job, c.round)
        if not job.round - job.spec.staleness <= c.round <= job.round + 1:
            self._count("commitment_out_of_window")
            return []
        if c.node in self._commits.get(key, {}):
            return []  # the first commitment binds (and a relayed copy is no news)
        late = key in self._commit_closed or c.round < job.round
        if late and not job.spec.staleness:
            self._count("commitment_late")
            return []
        if self.ledger.admits(c.node, "trainer"):
            self._count("notice_not_admitted")
            return []
        if not local and not c.verify(self.verifier):
            self._count("commitment_bad_signature")
            return []
        commits = self._commits.setdefault(key, {})
        if c.node in commits or len(commits) >= 4 * MAX_PARTICIPANTS:
            return []  # the first commitment binds
        commits[c.node] = c.digest
        out: list[Effect] = [Broadcast(msg=c)] if relay else []
        if late:
            # Bounded staleness: a slow trainer may still commit, but its reveal must not be
            # an update revealed before (see _notice).
            self._count("commitment_late_stale")
            self._late.add((c.job, c.round, c.node))
        elif key in self._reopened or key in self._reveal_seen:
            # The same holds once keys of the round are out while this validator's phase is
            # open: a phase a reassignment reopened, or a validator whose window started late
            # (its log applied the round's tasks after another's). A copier that saw the
            # reveals must not get a copied key in through it.
            self._count("commitment_after_reveals")
            self._late.add((c.job, c.round, c.node))
        return out + self._maybe_close_commit(job, c.round, now)

    def _maybe_close_commit(self, job: JobState, rnd: int, now: float) -> list[Effect]:
        assigned = job.assigned.get(rnd, frozenset())
        if rnd != job.round or job.assignment is None or job.assignment.round != rnd:
            return []
        if assigned and assigned <= self._commits.get((job.id, rnd), {}).keys():
            return self._close_commit(job, rnd, now)
        return []

    def _close_commit(self, job: JobState, rnd: int, now: float) -> list[Effect]:
        key = (job.id, rnd)
        if key in self._commit_closed or not self.is_validator:
            return []
        self._commit_closed.add(key)
        out: list[Effect] = []
        for node in sorted(self._commits.get(key, {})):
            if node == self.me:
                out += self._reveal(job.id, rnd, now)
            elif node in job.assigned.get(rnd, ()):
                out.append(Send(to=node, msg=CommitClosed(job=job.id, round=rnd)))
        rs = self._rounds.get(job.id)
        if rs is not None and rs.round == rnd:
            out += self._maybe_close(job, rs, now)  # those who did not commit never deliver
        return out
