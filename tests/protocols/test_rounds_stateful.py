"""Stateful property test: 4 validators' and 3 trainers' rounds machines (plus one node that is
never given a task) driven in arbitrary orders.

Hypothesis picks which pending submit the shared log commits next (every live machine folds
it, in order), which message in flight arrives (or is lost, or arrives twice), which timer
fires, whether a training or an aggregation succeeds, which node crashes (stops receiving) or
restarts (a fresh machine replaying the log), and what the adversary injects: notices that are
unsigned, forged, from the node without a task or replayed late; and, from validator 3 acting
Byzantine, proposals with a wrong model key and commits without a quorum. Aggregation is the
fake but deterministic :func:`~tests.protocols.rounds_helpers.fake_model_key` (the machine treats
model keys as opaque), so every committed result can be recomputed.

Invariants (safety): no round of a job commits twice; a committed result names only
updates signed by nodes that round (or a round within the staleness bound) assigned; every
committed model key recomputes from its update set; every live machine's ledger equals the
reference fold of the log; a validator is never accused of a wrong model key unless it is the
Byzantine one. Liveness, at the end of every run: once the faults stop (crashed nodes
restart, views agree, nothing is lost or injected), every job that was not cancelled completes.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from p2pnode_protocols.rounds import (
    CancelJob,
    Candidate,
    CommitRound,
    JobSpec,
    MembersSeen,
    Proposal,
    UpdateNotice,
    UpdateRef,
    encode_result,
    encode_tx,
)
from p2pnode_protocols.rounds.messages import proposal_payload, result_digest
from tests.protocols.rounds_helpers import (
    OUTSIDER,
    TRAINERS,
    VALIDATORS,
    VERIFIER,
    InFlight,
    World,
    attest,
    create,
    fake_model_key,
    result,
    signer,
    update,
)

pytestmark = pytest.mark.timeout(120)

BYZANTINE = VALIDATORS[3]


class RoundsWorld(RuleBasedStateMachine):
    @initialize(
        bounded=st.booleans(),
        wait=st.booleans(),
        rounds=st.integers(2, 4),
        min_updates=st.integers(1, 2),
        max_participants=st.integers(2, 3),
    )
    def setup(
        self, bounded: bool, wait: bool, rounds: int, min_updates: int, max_participants: int
    ) -> None:
        self.w = World()
        self.spec = JobSpec(
            rounds=rounds,
            max_participants=max_participants,
            min_updates=min_updates,
            round_deadline=3.0,
            sync="bounded" if bounded else "bsp",
            staleness=1 if bounded else 0,
            stragglers="wait" if wait else "drop",
        )
        job, body = create(self.spec)
        self.jobs = [job]
        self.w.fold(body)
        self.cancelled = False

    # -- honest progress -------------------------------------------------------------------

    @precondition(lambda self: self.w.pending)
    @rule(data=st.data())
    def commit(self, data: st.DataObject) -> None:
        self.w.commit_pending(data.draw(st.integers(0, len(self.w.pending) - 1)))

    @precondition(lambda self: self.w.net)
    @rule(data=st.data(), keep=st.booleans())
    def deliver(self, data: st.DataObject, keep: bool) -> None:
        """Deliver one message in flight; with ``keep`` it stays, to arrive again later."""
        self.w.deliver(data.draw(st.integers(0, len(self.w.net) - 1)), keep=keep)

    @precondition(lambda self: self.w.net)
    @rule(data=st.data())
    def lose(self, data: st.DataObject) -> None:
        self.w.net.pop(data.draw(st.integers(0, len(self.w.net) - 1)))

    @precondition(lambda self: self.w.timers)
    @rule(data=st.data())
    def fire_timer(self, data: st.DataObject) -> None:
        keys = sorted(self.w.timers, key=repr)
        self.w.fire(data.draw(st.sampled_from(keys)))

    @precondition(lambda self: self.w.trainings)
    @rule(data=st.data(), fail=st.booleans())
    def train(self, data: st.DataObject, fail: bool) -> None:
        self.w.train(data.draw(st.integers(0, len(self.w.trainings) - 1)), fail=fail)

    @precondition(lambda self: self.w.aggregates)
    @rule(data=st.data(), fail=st.booleans())
    def compute(self, data: st.DataObject, fail: bool) -> None:
        self.w.compute(data.draw(st.integers(0, len(self.w.aggregates) - 1)), fail=fail)

    @rule(timers=st.booleans())
    def settle(self, timers: bool) -> None:
        """A burst of honest progress, so that runs get far (several commits)."""
        self.w.settle(steps=150, timers=timers)

    # -- crashes ----------------------------------------------------------------------------

    @precondition(lambda self: len(self.w.crashed) < 2)
    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        live = [n for n in self.w.nodes if n not in self.w.crashed]
        self.w.crash(data.draw(st.sampled_from(live)))

    @precondition(lambda self: self.w.crashed)
    @rule(data=st.data())
    def restart(self, data: st.DataObject) -> None:
        self.w.restart(data.draw(st.sampled_from(sorted(self.w.crashed))))

    @rule(
        node=st.sampled_from(VALIDATORS),
        dead=st.sets(st.sampled_from([*VALIDATORS, *TRAINERS[:3]]), max_size=2),
    )
    def membership_view(self, node: bytes, dead: set[bytes]) -> None:
        """One validator's view holds some nodes dead (rightly or not): its turns and its
        selection differ from the others'."""
        if node in self.w.crashed:
            return
        view = tuple(
            Candidate(node=n, alive=n not in dead, free_slots=0 if n in VALIDATORS else 1)
            for n in (*VALIDATORS, *TRAINERS[:3])
        )
        self.w.handle(node, MembersSeen(candidates=view))

    # -- the adversary ----------------------------------------------------------------------

    def _open(self, data: st.DataObject) -> tuple[str, int, str]:
        """A committed job and its current round and model."""
        job = data.draw(st.sampled_from([j for j in self.jobs if j in self.w.ref.jobs]))
        state = self.w.ref.jobs[job]
        return state.id, state.round, state.model_key

    def _to_validators(self, src: bytes, msg: object) -> None:
        for v in VALIDATORS:
            self.w.net.append(InFlight(src, v, msg))

    @rule(
        data=st.data(),
        node=st.sampled_from([*TRAINERS[:3], OUTSIDER]),
        how=st.sampled_from(["zero", "other"]),
    )
    def forged_notice(self, data: st.DataObject, node: bytes, how: str) -> None:
        job, rnd, _ = self._open(data)
        honest = update(node, job, rnd, key=f"forged-{rnd}")
        sig = b"\x00" * 32 if how == "zero" else signer(OUTSIDER).sign(b"x")
        forged = UpdateRef(
            node=node, round=rnd, key=honest.key, size=honest.size, samples=1, sig=sig
        )
        self._to_validators(node, UpdateNotice(job=job, update=forged))

    @rule(data=st.data(), ahead=st.integers(0, 1))
    def unassigned_notice(self, data: st.DataObject, ahead: int) -> None:
        """The node that never gets a task notices an update, honestly signed."""
        job, rnd, _ = self._open(data)
        notice = UpdateNotice(job=job, update=update(OUTSIDER, job, rnd + ahead))
        self._to_validators(OUTSIDER, notice)

    @precondition(lambda self: self.w.notices)
    @rule(data=st.data())
    def replay_notice(self, data: st.DataObject) -> None:
        """A notice seen before arrives again (late or duplicated)."""
        u = data.draw(st.sampled_from(self.w.notices))
        job = self.jobs[0] if len(self.jobs) == 1 else data.draw(st.sampled_from(self.jobs))
        self._to_validators(u.node, UpdateNotice(job=job, update=u))

    @precondition(lambda self: self.w.notices)
    @rule(data=st.data(), submit=st.booleans())
    def byzantine_proposal(self, data: st.DataObject, submit: bool) -> None:
        """Validator 3 proposes honest updates under a wrong model key, or submits such a
        result with what attestations it can make (its own, and one forged)."""
        job, rnd, model = self._open(data)
        picked = data.draw(st.lists(st.sampled_from(self.w.notices), min_size=1, max_size=4))
        ups = {(u.node, u.round): u for u in picked}
        r = result(
            job, rnd, model, list(ups.values()), proposer=BYZANTINE, model_key=f"m-evil-{rnd}"
        )
        body = encode_result(r)
        if submit:
            atts = (*attest(body, [BYZANTINE]), (VALIDATORS[0], b"\x00" * 32))
            self.w.pending.append(
                encode_tx(CommitRound(result=body, attestations=tuple(sorted(atts))))
            )
            return
        sig = signer(BYZANTINE).sign(proposal_payload(result_digest(body)))
        for v in VALIDATORS[:3]:
            self.w.net.append(InFlight(BYZANTINE, v, Proposal(result=body, sig=sig)))

    @precondition(lambda self: len(self.jobs) < 2)
    @rule(priority=st.integers(-1, 1))
    def second_job(self, priority: int) -> None:
        job, body = create(
            JobSpec(rounds=2, max_participants=2, round_deadline=3.0, priority=priority),
            nonce=b"second",
        )
        self.jobs.append(job)
        self.w.pending.append(body)

    @precondition(lambda self: not self.cancelled and self.w.committed)
    @rule()
    def cancel(self) -> None:
        self.cancelled = True
        self.w.pending.append(encode_tx(CancelJob(job=self.jobs[0], reason="test")))

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def no_round_commits_twice(self) -> None:
        for state in self.w.ref.jobs.values():
            assert [s.round for s in state.history] == list(range(1, len(state.history) + 1))
            assert state.round == len(state.history) + 1
        per_round = [(r.job, r.round) for r in self.w.committed]
        assert len(per_round) == len(set(per_round))

    @invariant()
    def committed_updates_are_assigned_and_signed(self) -> None:
        for r in self.w.committed:
            for u in r.updates:
                assert u.node in self.w.assigned[(r.job, u.round)]
                assert u.verify(r.job, VERIFIER)
                assert u.node != OUTSIDER

    @invariant()
    def committed_results_recompute(self) -> None:
        for r in self.w.committed:
            assert r.model_key == fake_model_key(r.base_key, r.updates)
            assert r.proposer in VALIDATORS

    @invariant()
    def ledgers_agree(self) -> None:
        ref = repr((self.w.ref.jobs, self.w.ref.nodes))
        for n, m in self.w.machines.items():
            if n not in self.w.crashed:
                assert repr((m.ledger.jobs, m.ledger.nodes)) == ref, n

    @invariant()
    def only_the_byzantine_validator_is_flagged_for_a_wrong_aggregate(self) -> None:
        for r in self.w.committed:
            for f in r.flags:
                assert f.kind in ("wrong_aggregate", "censorship"), f  # the fake has no others
                if f.kind == "wrong_aggregate":
                    assert f.node == BYZANTINE, f

    @invariant()
    def honest_validators_are_not_accused_of_a_wrong_key(self) -> None:
        for _, e in self.w.evidence:
            if e.reason == "the model key does not recompute":
                assert e.proposer == BYZANTINE

    # -- liveness -----------------------------------------------------------------------------

    def teardown(self) -> None:
        """After the faults: every crashed node restarts, every view holds every node alive,
        the adversary stops and nothing more is lost. Then every job that was not cancelled
        must complete, whatever state the faults left the machines in (a chaos run once saw a
        round stop for good after proposals were refused)."""
        if not hasattr(self, "w"):
            return
        for node in sorted(self.w.crashed):
            self.w.restart(node)
        for node in self.w.nodes:
            self.w.handle(node, MembersSeen(candidates=self.w.candidates()))
        self.w.settle(steps=20_000, timers=True)
        for job in self.jobs:
            state = self.w.ref.jobs.get(job)
            if state is None:
                continue  # its create was never committed
            if state.status != "cancelled":
                assert state.status == "completed", self._stalled(job)

    def _stalled(self, job: str) -> str:
        """What the validators hold of a job that did not complete (the assertion's text)."""
        state = self.w.ref.jobs[job]
        lines = [f"job {job} {state.status} at round {state.round}, now {self.w.now}"]
        for v in VALIDATORS:
            m = self.w.machines[v]
            lines.append(f"{v!r}: {m.open_rounds(self.w.now)} counters {m.counters}")
        lines.append(f"timers {sorted(self.w.timers.items(), key=repr)}")
        return "\n".join(lines)


RoundsWorld.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestRoundsStateful = RoundsWorld.TestCase
