"""The validators' collection of a round, their proposals and attestations, a part of
:class:`~.machine.RoundsMachine` (its state is set up there).

Validators collect notices until every assigned node delivered or the deadline passed; the
proposer of the turn aggregates and broadcasts its signed result; the others recompute it (with
their own spot-checks and copy checks) and attest only a bit-identical model key with the same
flags; a quorum of attestations makes the ``CommitRound``.
"""

from __future__ import annotations

from dataclasses import replace

from p2pnode_protocols.machine import (
    Broadcast,
    Effect,
    MessageReceived,
    Send,
)

from .events import (
    Aggregate,
    BadProposal,
    Computed,
    Fetched,
    Prefetch,
    RoundPhase,
    Submit,
    Unsolicited,
)
from .ledger import JobState
from .messages import (
    UPDATE_FLAGS,
    Attestation,
    CommitClosed,
    Commitment,
    Flag,
    Proposal,
    RoundResult,
    UpdateNotice,
    UpdateRef,
    attestation_payload,
    commitment_digest,
    decode_result,
    encode_message,
    encode_result,
    proposal_payload,
    result_digest,
)
from .spec import MAX_PARTICIPANTS
from .state import METRIC_TOLERANCE, OpenRound
from .transactions import CommitRound, encode_tx
from .verify import spot_checked

__all__ = ["Collection"]

#: Full cycles of proposer turns during which a proposal that leaves out held updates is
#: refused as censorship; after them the round's liveness comes first (see ``_censored``).
CENSOR_CYCLES = 2


class Collection:
    # -- validators: collection ------------------------------------------------------------------

    def _message(self, e: MessageReceived, now: float) -> list[Effect]:
        msg = e.msg
        if isinstance(msg, CommitClosed):
            return self._reveal(msg.job, msg.round, now) if e.sender in self.committee else []
        if isinstance(msg, (UpdateNotice, Commitment)):
            node = msg.update.node if isinstance(msg, UpdateNotice) else msg.node
            relayed = node != e.sender
            if relayed and e.sender not in self.committee:
                self._count("refused_relayed")
                return []
            if not self.is_validator:
                return []
            # Validators relay what they got (signed by the trainer): not rate-limited.
            if not relayed and not self._rate.allow(e.sender, now):
                self._count("rate_limited")
                return []
            if isinstance(msg, Commitment):
                return self._commitment(msg, now, relay=not relayed)
            return self._notice(msg, now, relay=not relayed, via=e.sender)
        if not self.is_validator:
            return []
        if isinstance(msg, Proposal):
            return self._proposal(msg, e.sender, now)
        if isinstance(msg, Attestation):
            return self._attestation(msg, now)
        return []

    def _notice(
        self,
        n: UpdateNotice,
        now: float,
        local: bool = False,
        relay: bool = False,
        via: bytes | None = None,
    ) -> list[Effect]:
        job = self.ledger.jobs.get(n.job)
        u = n.update
        if job is None or job.status != "running":
            self._count("notice_unknown_job")
            return []
        if not local and not u.verify(n.job, self.verifier):
            self._count("notice_bad_signature")
            return []
        if u.round > job.round + 1 or u.round < job.round - job.spec.staleness:
            self._count("notice_out_of_window")
            return []
        if self.ledger.admits(u.node, "trainer"):
            self._count("notice_not_admitted")
            return self._unsolicited(job, n)
        if job.spec.commit_reveal:
            # A reveal counts only with the matching commitment, received before the commit
            # phase closed (later commitments were refused), so nobody copies a revealed key.
            digest = commitment_digest(n.job, u.round, u.node, u.key, n.salt)
            if self._commits.get((job.id, u.round), {}).get(u.node) != digest:
                self._count("reveal_without_commitment")
                return []
            self._reveal_seen.add((job.id, u.round))
            revealed = self._revealed.setdefault(job.id, {})
            if (job.id, u.round, u.node) in self._late and revealed.get(u.key, u.node) != u.node:
                self._count("reveal_copies_a_revealed_key")
                return []
            revealed.setdefault(u.key, u.node)
            while len(revealed) > 8 * MAX_PARTICIPANTS:
                del revealed[next(iter(revealed))]
        rs = self._rounds.get(job.id)
        if u.round > job.round or rs is None or rs.round != job.round:
            # The round this update can join is not open here yet (our StartRound commit may
            # come after a fast trainer's notice): keep it until it is, for the round it joins.
            joins = max(u.round, job.round)
            early = self._early.setdefault((job.id, joins), {})
            if len(early) < 4 * MAX_PARTICIPANTS:  # signed, but not yet checked as assigned
                early[(u.node, u.round)] = u
            return []
        if u.node not in job.assigned.get(u.round, ()):
            self._count("notice_unassigned")
            return self._unsolicited(job, n)
        if (u.node, u.round) in job.used:
            self._count("notice_already_committed")
            return []
        k = (u.node, u.round)
        holders = rs.holders.setdefault(k, {self.me})
        if via is not None and via in self.committee:
            holders.add(via)  # a validator relayed it: it holds it too
        if k in rs.updates:
            return []
        rs.updates[k] = u
        rs.held[k] = now
        out: list[Effect] = [Prefetch(job=job.id, round=u.round, key=u.key, providers=(u.node,))]
        if len(rs.updates) == 1:
            out.append(RoundPhase(job=job.id, round=rs.round, phase="collection"))
        if relay:
            # So that an honest proposer holds every update some validator holds (a trainer
            # that told only some validators cannot make the others look like censors).
            out.append(Broadcast(msg=n))
        return out + self._maybe_close(job, rs, now)

    def _fetched(self, e: Fetched, now: float) -> list[Effect]:
        rs = self._rounds.get(e.job)
        if rs is not None and len(rs.fetched) < 4 * MAX_PARTICIPANTS:
            rs.fetched.add(e.key)
        return []

    def _maybe_close(self, job: JobState, rs: OpenRound, now: float) -> list[Effect]:
        if rs.closed_at is not None:
            return []
        fresh = {node for node, r in rs.updates if r == rs.round}
        expected = job.assigned.get(rs.round, frozenset())
        key = (job.id, rs.round)
        if job.spec.commit_reveal and key in self._commit_closed:
            expected = expected & self._commits.get(key, {}).keys()
        everyone = fresh >= expected
        enough = len(rs.updates) >= job.spec.min_updates
        if enough and (everyone or now >= rs.deadline):
            rs.closed_at = now
            return [
                RoundPhase(
                    job=job.id,
                    round=rs.round,
                    phase="aggregation",
                    detail=f"{len(rs.updates)} updates",
                ),
                self._set_timer("close", job.id, rs.round, now + self.config.result_timeout),
                *self._propose_if_turn(job, rs),
            ]
        return []

    def _close_tick(self, job: JobState, now: float) -> list[Effect]:
        rs = self._rounds.get(job.id)
        if rs is None or rs.round != job.round:
            return []
        if rs.closed_at is None:
            if job.spec.stragglers == "wait" and rs.extended == 0:
                rs.extended += 1
                rs.deadline = now + job.spec.round_deadline
                return [self._set_timer("close", job.id, rs.round, rs.deadline)]
            out = self._maybe_close(job, rs, now)
            if rs.closed_at is None:
                # Too few updates: wait another deadline, and from the second on let the
                # validator whose turn it is reassign the round to the nodes alive now.
                rs.extended += 1
                rs.deadline = now + job.spec.round_deadline
                out.append(self._set_timer("close", job.id, rs.round, rs.deadline))
                if rs.extended >= 2:
                    self._count("round_reassigned")
                    out += self._try_start(job, rs.extended, now, reassign=True)
            return out
        # No result committed in time: the next validator's turn.
        rs.attempt += 1
        rs.aggregating = False
        self._count("proposer_rotated")
        return [
            self._set_timer("close", job.id, rs.round, now + self.config.result_timeout),
            *self._propose_if_turn(job, rs),
        ]

    def _propose_if_turn(self, job: JobState, rs: OpenRound) -> list[Effect]:
        if self.leader(job.id, rs.round, rs.attempt) != self.me or rs.aggregating:
            return []
        rs.aggregating = True
        updates = tuple(rs.updates[k] for k in sorted(rs.updates))
        return [self._aggregate_effect(job, rs.round, updates)]

    def _aggregate_effect(
        self,
        job: JobState,
        rnd: int,
        updates: tuple[UpdateRef, ...],
        check: RoundResult | None = None,
        check_bytes: bytes | None = None,
    ) -> Aggregate:
        """An Aggregate with what verified work needs: every fresh update's shard and the
        spot-checked nodes (from the update set itself, so proposer and checkers agree)."""
        shards = tuple(
            (u.node, job.shard_of[(u.node, u.round)])
            for u in updates
            if u.round == rnd and (u.node, u.round) in job.shard_of
        )
        spot = spot_checked(job.id, rnd, job.model_key, updates, job.spec.spot_check)
        rs = self._rounds.get(job.id)
        held = rs.holders if rs is not None and rs.round == rnd else {}
        # A checker may fetch every update of a proposal from its proposer too, which
        # aggregated them all (the update's trainer may be gone or cut off from the checker).
        also = {check.proposer} if check is not None else set()
        holders = tuple(
            (u.key, tuple(sorted((held.get((u.node, u.round), set()) | also) - {self.me, u.node})))
            for u in updates
        )
        return Aggregate(
            job=job.id,
            round=rnd,
            base_key=job.model_key,
            updates=updates,
            check=check,
            check_bytes=check_bytes,
            shards=shards,
            spot=spot,
            holders=tuple((k, h) for k, h in holders if h),
        )

    # -- validators: proposals and attestations --------------------------------------------------

    def _computed(self, e: Computed, now: float) -> list[Effect]:
        job = self.ledger.jobs.get(e.job)
        rs = self._rounds.get(e.job)
        if job is None or rs is None or rs.round != e.round or job.round != e.round:
            return []
        if e.check is not None:
            return self._checked(job, rs, e)
        rs.aggregating = False
        if e.result is None:
            self._count("aggregate_failed")
            return [RoundPhase(job=job.id, round=e.round, phase="aggregation", detail=e.error)]
        # Our own checks of the round's other proposals join the content flags of the compute,
        # in the first cycle of turns only: a finding is attested only by validators that made
        # it too, so once every validator has proposed with its findings and none committed,
        # they are not shared by a quorum, and carrying them on would stall the round for good
        # (validators that refused different proposals refuse each other's flags).
        mine = {(f.node, f.kind): f for f in e.result.flags if f.kind in UPDATE_FLAGS}
        if rs.attempt < len(self.committee):
            for node, fl in self._refused.get((job.id, e.round), {}).items():
                if node != self.me:
                    mine[(node, fl.kind)] = fl
        flags = tuple(mine[k] for k in sorted(mine))
        result = replace(e.result, proposer=self.me, flags=flags)
        body = encode_result(result)
        digest = result_digest(body)
        if body != rs.proposal:
            rs.proposal = body
            rs.attestations = {self.me: self.signer.sign(attestation_payload(digest))}
        # else: the same result proposed again keeps the attestations it gathered, and is
        # submitted again once it has a quorum (a submit lost to a view change is retried;
        # the ledger commits a round once).
        rs.submitted = False
        proposal = Proposal(result=body, sig=self.signer.sign(proposal_payload(digest)))
        out: list[Effect] = [
            RoundPhase(job=job.id, round=e.round, phase="validation", detail=result.model_key),
            Broadcast(msg=proposal),
        ]
        return out + self._maybe_submit(rs)

    def _proposal(self, p: Proposal, sender: bytes, now: float) -> list[Effect]:
        result = decode_result(p.result)
        digest = result_digest(p.result)
        if sender not in self.committee or result.proposer != sender:
            self._count("proposal_not_from_validator")
            return []
        if not self.verifier.verify(sender, proposal_payload(digest), p.sig):
            self._count("proposal_bad_signature")
            return []
        job = self.ledger.jobs.get(result.job)
        rs = self._rounds.get(result.job)
        if job is None or rs is None or rs.round != result.round or job.round != result.round:
            self._count("proposal_not_current")
            return []
        if digest in rs.attested:
            # Attested before: the attestation may have been lost, or the proposer proposes
            # the same result again on a later turn, with its attestations counted afresh.
            self._count("attestation_resent")
            return [self._attestation_of(job.id, rs.round, digest, sender, rs.attested[digest])]
        if digest in rs.checked:
            return []
        rs.checked.add(digest)
        reason = self.ledger.check_result(job, result)
        if not reason:
            reason = self._censored(job, rs, result, digest, now)
            if reason:
                # Censorship depends on when it is judged (see _censored): the same proposal,
                # proposed again on a later turn, is judged again, not ignored (after two cycles
                # of turns every refused proposal came back unchanged and the round was silent).
                rs.checked.discard(digest)
        if reason:
            return [
                BadProposal(
                    job=job.id,
                    round=result.round,
                    proposer=sender,
                    reason=reason,
                    proposal=p.result,
                    sig=p.sig,
                )
            ]
        self._sigs[digest] = p.sig
        return [
            RoundPhase(job=job.id, round=result.round, phase="validation", detail=result.model_key),
            self._aggregate_effect(job, result.round, result.updates, result, p.result),
        ]

    def _unsolicited(self, job: JobState, n: UpdateNotice) -> list[Effect]:
        """A validly signed notice for a started round whose tasks do not name its signer is
        evidence (once per node and round): the service turns it into an accusation, which
        every node checks against the committed tasks."""
        u = n.update
        key = (job.id, u.round, u.node)
        if u.round not in job.assigned or u.node in job.assigned[u.round] or key in self._accused:
            return []
        self._accused.add(key)
        if len(self._accused) > 4 * MAX_PARTICIPANTS:
            self._accused.pop()
        return [Unsolicited(job=job.id, round=u.round, node=u.node, notice=encode_message(n))]

    def _censored(
        self, job: JobState, rs: OpenRound, result: RoundResult, digest: bytes, now: float
    ) -> str:
        """The refusal's reason if the proposal leaves out updates that f+1 validators hold (as
        far as this one knows: itself and those that relayed them) and that this validator held
        (notice and blob) before its own close and ``censor_grace`` before the proposal came
        (recorded, to be flagged); "" if it leaves out none. An update only this validator
        holds, or whose blob it could not fetch, is no evidence: refusing for it could stall
        the round for good."""
        if rs.closed_at is None:
            return ""
        if rs.attempt >= CENSOR_CYCLES * len(self.committee):
            # Liveness first: every validator has had its turn twice and the round is still
            # open. After restarts and partitions each validator may hold updates no proposer
            # can fetch, so every proposal is refused by someone, for good (a chaos run stalled
            # five minutes at one round). Leaving those updates out is the lesser harm.
            self._count("censorship_waived")
            return ""
        included = {(u.node, u.round) for u in result.updates}
        cutoff = min(rs.closed_at, now - self.config.censor_grace)
        f = (len(self.committee) - 1) // 3
        left_out = [
            k
            for k, t in rs.held.items()
            if k in rs.updates
            and k not in included
            and k not in job.used
            and t <= cutoff
            and rs.updates[k].key in rs.fetched
            and len(rs.holders.get(k, ())) >= f + 1
        ]
        if not left_out:
            return ""
        self._count("proposal_censoring")
        self._refused.setdefault((job.id, rs.round), {})[result.proposer] = Flag(
            node=result.proposer, kind="censorship", detail=digest.hex()
        )
        return f"censorship: {len(left_out)} updates held since before the close left out"

    def _checked(self, job: JobState, rs: OpenRound, e: Computed) -> list[Effect]:
        assert e.check is not None
        theirs = decode_result(e.check)
        digest = result_digest(e.check)
        psig = self._sigs.pop(digest, b"")
        mine = e.result
        if mine is None:
            # We could not recompute (an update not fetched in time): no verdict, no evidence;
            # a later copy of the proposal may be checked again.
            rs.checked.discard(digest)
            self._count("recompute_failed")
            return []
        reason = _difference(mine, theirs) or self._disagrees(job, theirs)
        if reason:
            self._count("proposal_refused")
            if theirs.proposer != self.me and not reason.startswith("flag"):
                self._refused.setdefault((job.id, e.round), {})[theirs.proposer] = Flag(
                    node=theirs.proposer, kind="wrong_aggregate", detail=digest.hex()
                )
            return [
                BadProposal(
                    job=job.id,
                    round=e.round,
                    proposer=theirs.proposer,
                    reason=reason,
                    proposal=e.check,
                    sig=psig,
                )
            ]
        sig = self.signer.sign(attestation_payload(digest))
        rs.attested[digest] = sig
        self._count("attested")
        return [self._attestation_of(job.id, e.round, digest, theirs.proposer, sig)]

    def _attestation_of(
        self, job: str, rnd: int, digest: bytes, proposer: bytes, sig: bytes
    ) -> Send:
        att = Attestation(job=job, round=rnd, digest=digest, validator=self.me, sig=sig)
        return Send(to=proposer, msg=att)

    def _disagrees(self, job: JobState, theirs: RoundResult) -> str:
        """A proposal's flags about validators must be ones this validator found itself."""
        found = self._refused.get((job.id, theirs.round), {})
        for fl in theirs.flags:
            if fl.kind not in UPDATE_FLAGS and found.get(fl.node) != fl:
                return f"flag {fl.kind} of a validator this node has no finding against"
        return ""

    def _attestation(self, a: Attestation, now: float) -> list[Effect]:
        rs = self._rounds.get(a.job)
        if rs is None or rs.round != a.round or rs.proposal is None:
            return []
        if result_digest(rs.proposal) != a.digest or a.validator not in self.committee:
            return []
        if not self.verifier.verify(a.validator, attestation_payload(a.digest), a.sig):
            self._count("attestation_bad_signature")
            return []
        rs.attestations[a.validator] = a.sig
        return self._maybe_submit(rs)

    def _maybe_submit(self, rs: OpenRound) -> list[Effect]:
        if rs.submitted or rs.proposal is None or len(rs.attestations) < self.ledger.quorum:
            return []
        rs.submitted = True
        atts = tuple(sorted(rs.attestations.items()))
        return [Submit(body=encode_tx(CommitRound(result=rs.proposal, attestations=atts)))]


def _difference(mine: RoundResult, theirs: RoundResult) -> str:
    if mine.model_key != theirs.model_key:
        return "the model key does not recompute"
    if mine.contributors != theirs.contributors or mine.outliers != theirs.outliers:
        return "contributors or outliers differ"
    # "not <=" so that a NaN (which compares false with everything) is a difference too.
    if not abs(mine.accuracy - theirs.accuracy) <= METRIC_TOLERANCE:
        return "accuracy differs beyond tolerance"
    if not abs(mine.loss - theirs.loss) <= METRIC_TOLERANCE:
        return "loss differs beyond tolerance"
    if [f for f in mine.flags if f.kind in UPDATE_FLAGS] != [
        f for f in theirs.flags if f.kind in UPDATE_FLAGS
    ]:
        return "spot-check or copy flags differ"
    mine_scores, their_scores = dict(mine.scores), dict(theirs.scores)
    if mine_scores.keys() != their_scores.keys():
        return "scores differ"
    for k, v in mine_scores.items():
        if not abs(v - their_scores[k]) <= METRIC_TOLERANCE:
            return "scores differ beyond tolerance"
    return ""
