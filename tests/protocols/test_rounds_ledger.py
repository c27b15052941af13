"""The training ledger's rules: what a committed rounds transaction does, and what it rejects
(the same on every node, changing nothing)."""

from __future__ import annotations

import pytest

from p2pnode_protocols.rounds import (
    JobSpec,
    NodeRecord,
    TrainingLedger,
    UpdateRef,
    encode_tx,
    quorum_of,
)
from p2pnode_protocols.rounds.transactions import CancelJob
from tests.protocols.rounds_helpers import (
    INIT_KEY,
    OUTSIDER,
    TRAINERS,
    VALIDATORS,
    VERIFIER,
    commit,
    create,
    result,
    signer,
    start,
    update,
)

pytestmark = pytest.mark.timeout(60)

T0, T1, T2, T3 = TRAINERS


class Log:
    """A ledger fed one transaction per log entry, recording what each did."""

    def __init__(self) -> None:
        self.ledger = TrainingLedger(VALIDATORS, VERIFIER)
        self.seq = 0

    def apply(self, body: bytes) -> str:
        self.seq += 1
        before = repr((self.ledger.jobs, self.ledger.nodes))
        a = self.ledger.apply(self.seq, body)
        if a.status != "ok":
            # A rejected transaction changes nothing.
            assert repr((self.ledger.jobs, self.ledger.nodes)) == before
            return a.reason
        return "ok"


def _job(spec: JobSpec | None = None) -> tuple[Log, str]:
    log = Log()
    job, body = create(spec or JobSpec(rounds=3, max_participants=3, min_updates=1))
    assert log.apply(body) == "ok"
    return log, job


def _round(log: Log, job: str, rnd: int, nodes: tuple[bytes, ...] = (T0, T1)) -> str:
    """Start and commit ``rnd`` with an update from each of ``nodes``; the new model key."""
    base = log.ledger.jobs[job].model_key
    assert log.apply(start(job, rnd, base, nodes)) == "ok"
    r = result(job, rnd, base, [update(n, job, rnd) for n in nodes])
    assert log.apply(commit(r)) == "ok"
    return r.model_key


def test_quorum() -> None:
    assert [quorum_of(n) for n in (1, 2, 3, 4, 5, 7, 10)] == [1, 1, 1, 3, 3, 5, 7]


def test_create_start_commit() -> None:
    log, job = _job()
    state = log.ledger.jobs[job]
    assert (state.status, state.round, state.model_key, state.assignment) == (
        "running",
        1,
        INIT_KEY,
        None,
    )
    assert log.apply(start(job, 1, INIT_KEY, (T0, T1))) == "ok"
    assert state.assignment is not None and state.assigned[1] == {T0, T1}
    r = result(job, 1, INIT_KEY, [update(T0, job, 1)])
    assert log.apply(commit(r)) == "ok"
    assert (state.round, state.model_key, state.assignment) == (2, r.model_key, None)
    (summary,) = state.history
    assert (summary.round, summary.model_key, summary.updates, summary.seq) == (
        1,
        r.model_key,
        1,
        3,
    )
    assert state.model_of(0) == INIT_KEY and state.model_of(1) == r.model_key
    assert state.model_of(2) is None
    # Records: both were assigned, T1 missed, T0 contributed.
    assert log.ledger.record(T0) == NodeRecord(assigned=1, contributed=1, score_sum=1.0)
    assert log.ledger.record(T1) == NodeRecord(assigned=1, missed=1)
    assert log.ledger.record(T1).reliability == pytest.approx(1 / 3)
    assert log.ledger.record(OUTSIDER).reliability == 0.5


def test_same_create_twice_is_rejected_and_nonce_makes_two_jobs() -> None:
    log, job = _job()
    _, body = create(JobSpec(rounds=3, max_participants=3), nonce=b"n1")
    assert log.apply(body) == "job exists"
    job2, body2 = create(JobSpec(rounds=3, max_participants=3), nonce=b"n2")
    assert job2 != job and log.apply(body2) == "ok"


def test_garbage_and_unknown_jobs_are_rejected() -> None:
    log, _ = _job()
    assert "bad rounds transaction" in log.apply(b"\xff")
    assert log.apply(start("feedfeedfeedfeed", 1, INIT_KEY, (T0,))) == "no such job"
    assert log.apply(encode_tx(CancelJob(job="feedfeedfeedfeed"))) == "no such job"


def test_start_rules() -> None:
    log, job = _job(JobSpec(rounds=3, min_participants=2, max_participants=3, shards=4))
    assert "current round" in log.apply(start(job, 2, INIT_KEY, (T0, T1)))
    assert "base_key" in log.apply(start(job, 1, "other", (T0, T1)))
    assert "min..max" in log.apply(start(job, 1, INIT_KEY, (T0,)))
    assert "min..max" in log.apply(start(job, 1, INIT_KEY, (T0, T1, T2, T3)))
    from p2pnode_protocols.rounds import StartRound, Task

    dup = StartRound(
        job=job, round=1, base_key=INIT_KEY, tasks=(Task(node=T0, shard=0), Task(node=T1, shard=0))
    )
    assert "distinct shards" in log.apply(encode_tx(dup))
    out = StartRound(
        job=job, round=1, base_key=INIT_KEY, tasks=(Task(node=T0, shard=0), Task(node=T1, shard=4))
    )
    assert "distinct shards" in log.apply(encode_tx(out))
    assert "nothing to reassign" in log.apply(start(job, 1, INIT_KEY, (T0, T1), reassign=True))
    assert log.apply(start(job, 1, INIT_KEY, (T0, T1))) == "ok"
    # A second start, even with other tasks (a starter whose turn overlapped), is refused.
    assert "started already" in log.apply(start(job, 1, INIT_KEY, (T2, T3)))
    # A reassignment to the same nodes is the round tried again (their tasks failed, or their
    # commitments came too late): taken, and it changes nothing but the attempt.
    assert log.apply(start(job, 1, INIT_KEY, (T0, T1), reassign=True)) == "ok"
    assert log.ledger.jobs[job].assigned[1] == {T0, T1}
    # An explicit reassignment of the open round is taken; both sets of nodes may deliver.
    assert log.apply(start(job, 1, INIT_KEY, (T2, T3), reassign=True)) == "ok"
    assert log.ledger.jobs[job].assigned[1] == {T0, T1, T2, T3}


def test_start_refuses_a_node_with_two_tasks() -> None:
    from p2pnode_protocols.rounds import StartRound, Task

    log, job = _job(JobSpec(rounds=3, max_participants=3))
    tx = StartRound(
        job=job, round=1, base_key=INIT_KEY, tasks=(Task(node=T0, shard=0), Task(node=T0, shard=1))
    )
    assert log.apply(encode_tx(tx)) != "ok"


def test_commit_once_and_second_commit_rejected() -> None:
    log, job = _job()
    assert log.apply(start(job, 1, INIT_KEY, (T0, T1))) == "ok"
    first = result(job, 1, INIT_KEY, [update(T0, job, 1)])
    other = result(job, 1, INIT_KEY, [update(T0, job, 1), update(T1, job, 1)])
    assert log.apply(commit(first)) == "ok"
    assert "open round" in log.apply(commit(first))
    assert "open round" in log.apply(commit(other))
    assert [s.round for s in log.ledger.jobs[job].history] == [1]


def test_commit_without_a_start_is_rejected() -> None:
    log, job = _job()
    assert "open round" in log.apply(commit(result(job, 1, INIT_KEY, [update(T0, job, 1)])))


def test_commit_must_build_on_the_current_model() -> None:
    log, job = _job()
    assert log.apply(start(job, 1, INIT_KEY, (T0,))) == "ok"
    r = result(job, 1, "some-other-model", [update(T0, job, 1)])
    assert "current model" in log.apply(commit(r))


def test_unassigned_node_is_rejected() -> None:
    log, job = _job()
    assert log.apply(start(job, 1, INIT_KEY, (T0, T1))) == "ok"
    r = result(job, 1, INIT_KEY, [update(T0, job, 1), update(T2, job, 1)])
    assert "not assigned" in log.apply(commit(r))


def test_bad_update_signature_is_rejected() -> None:
    log, job = _job()
    assert log.apply(start(job, 1, INIT_KEY, (T0, T1))) == "ok"
    good = update(T0, job, 1)
    forged = UpdateRef(
        node=T1, round=1, key="evil", size=100, samples=10, sig=signer(T0).sign(b"whatever")
    )
    # Signed by the right node, but for another key.
    swapped = UpdateRef(
        node=T0, round=1, key="other", size=good.size, samples=good.samples, sig=good.sig
    )
    assert "signature" in log.apply(commit(result(job, 1, INIT_KEY, [good, forged])))
    assert "signature" in log.apply(commit(result(job, 1, INIT_KEY, [swapped])))
    # An update signed for another job does not verify here.
    elsewhere = update(T0, "fedcba9876543210", 1)
    moved = UpdateRef(node=T0, round=1, key=elsewhere.key, size=100, samples=10, sig=elsewhere.sig)
    assert "signature" in log.apply(commit(result(job, 1, INIT_KEY, [moved])))


def test_min_updates() -> None:
    log, job = _job(JobSpec(rounds=3, max_participants=3, min_updates=2))
    assert log.apply(start(job, 1, INIT_KEY, (T0, T1))) == "ok"
    assert "min_updates" in log.apply(commit(result(job, 1, INIT_KEY, [update(T0, job, 1)])))


def test_attestation_rules() -> None:
    log, job = _job()
    assert log.apply(start(job, 1, INIT_KEY, (T0,))) == "ok"
    r = result(job, 1, INIT_KEY, [update(T0, job, 1)])
    from p2pnode_protocols.rounds import CommitRound, encode_result
    from tests.protocols.rounds_helpers import attest

    body = encode_result(r)

    def with_atts(atts: tuple[tuple[bytes, bytes], ...]) -> bytes:
        return encode_tx(CommitRound(result=body, attestations=atts))

    assert "3 needed" in log.apply(commit(r, VALIDATORS[:2]))
    assert "3 needed" in log.apply(with_atts(()))
    two = attest(body, VALIDATORS[:2])
    assert "distinct" in log.apply(with_atts((*two, two[0])))  # duplicated
    assert "distinct" in log.apply(with_atts((*two, *attest(body, [OUTSIDER]))))
    assert "distinct" in log.apply(with_atts((*two, *attest(body, [T0]))))
    # A validator's signature over another result.
    other = encode_result(result(job, 1, INIT_KEY, [update(T0, job, 1, key="x")]))
    stray = attest(other, [VALIDATORS[2]])
    assert "does not verify" in log.apply(with_atts((*two, *stray)))
    # One validator's signature under another's name.
    (_, sig) = attest(body, [VALIDATORS[0]])[0]
    assert "does not verify" in log.apply(with_atts((*two, (VALIDATORS[3], sig))))
    assert log.apply(with_atts(attest(body, VALIDATORS))) == "ok"


def test_proposer_must_be_a_validator() -> None:
    log, job = _job()
    assert log.apply(start(job, 1, INIT_KEY, (T0,))) == "ok"
    r = result(job, 1, INIT_KEY, [update(T0, job, 1)], proposer=OUTSIDER)
    assert "proposer" in log.apply(commit(r))


def test_stale_updates_under_bounded_staleness() -> None:
    spec = JobSpec(rounds=5, max_participants=3, sync="bounded", staleness=1)
    log, job = _job(spec)
    # Round 1 assigns T0 and T1 but commits without T1's update (it was late).
    assert log.apply(start(job, 1, INIT_KEY, (T0, T1))) == "ok"
    r1 = result(job, 1, INIT_KEY, [update(T0, job, 1)])
    assert log.apply(commit(r1)) == "ok"
    m1 = r1.model_key
    assert log.apply(start(job, 2, m1, (T0, T2))) == "ok"
    # T1 was assigned round 1 (one round back): its late update counts in round 2.
    r2 = result(job, 2, m1, [update(T0, job, 2), update(T1, job, 1, key="late")])
    # T2 was not assigned round 1.
    bad = result(job, 2, m1, [update(T0, job, 2), update(T2, job, 1)])
    assert "not assigned" in log.apply(commit(bad))
    # An update from the future is refused.
    future = result(job, 2, m1, [update(T0, job, 3)])
    assert "staler" in log.apply(commit(future))
    assert log.apply(commit(r2)) == "ok"
    m2 = log.ledger.jobs[job].model_key
    assert log.apply(start(job, 3, m2, (T0, T1))) == "ok"
    # Round 1 is now two rounds back: beyond the bound.
    too_old = result(job, 3, m2, [update(T0, job, 3), update(T1, job, 1, key="later")])
    assert "staler" in log.apply(commit(too_old))
    # Records: T1 missed round 1's deadline, and its stale update counts as a contribution
    # (not as a delivery of round 2, where it had no task).
    rec = log.ledger.record(T1)
    assert (rec.assigned, rec.contributed, rec.missed) == (1, 1, 1)
    assert log.ledger.record(T2).missed == 1


def test_bsp_refuses_a_previous_rounds_update() -> None:
    log, job = _job()
    m1 = _round(log, job, 1, (T0, T1))
    assert log.apply(start(job, 2, m1, (T0, T1))) == "ok"
    r = result(job, 2, m1, [update(T0, job, 2), update(T1, job, 1, key="late")])
    assert "staler" in log.apply(commit(r))


def test_an_update_commits_once() -> None:
    spec = JobSpec(rounds=5, max_participants=3, sync="bounded", staleness=1)
    log, job = _job(spec)
    u1 = update(T0, job, 1)
    assert log.apply(start(job, 1, INIT_KEY, (T0, T1))) == "ok"
    assert log.apply(commit(result(job, 1, INIT_KEY, [u1]))) == "ok"
    m1 = log.ledger.jobs[job].model_key
    assert log.apply(start(job, 2, m1, (T0, T1))) == "ok"
    again = result(job, 2, m1, [u1, update(T1, job, 2)])
    assert log.apply(commit(again)) != "ok"


def test_completion_after_the_last_round() -> None:
    log, job = _job(JobSpec(rounds=2, max_participants=3))
    m1 = _round(log, job, 1)
    m2 = _round(log, job, 2)
    state = log.ledger.jobs[job]
    assert (state.status, state.round, state.model_key) == ("completed", 3, m2)
    assert [s.model_key for s in state.history] == [m1, m2]
    assert list(log.ledger.running()) == []
    assert log.apply(start(job, 3, m2, (T0,))) == "job is completed"
    assert log.apply(encode_tx(CancelJob(job=job))) == "job is completed"


def test_cancel() -> None:
    log, job = _job()
    assert log.apply(start(job, 1, INIT_KEY, (T0, T1))) == "ok"
    assert log.apply(encode_tx(CancelJob(job=job, reason="operator"))) == "ok"
    state = log.ledger.jobs[job]
    assert (state.status, state.reason, state.assignment) == ("cancelled", "operator", None)
    assert log.apply(commit(result(job, 1, INIT_KEY, [update(T0, job, 1)]))) == "job is cancelled"
    assert log.apply(encode_tx(CancelJob(job=job))) == "job is cancelled"
    log2, job2 = _job()
    assert log2.apply(encode_tx(CancelJob(job=job2))) == "ok"
    assert log2.ledger.jobs[job2].reason == "cancelled"


def test_running_orders_by_priority_then_age() -> None:
    log = Log()
    ids = []
    for i, prio in enumerate([0, 5, 0, -1]):
        job, body = create(JobSpec(priority=prio), nonce=bytes([i + 1]))
        assert log.apply(body) == "ok"
        ids.append(job)
    assert [j.id for j in log.ledger.running()] == [ids[1], ids[0], ids[2], ids[3]]


def test_fold_is_deterministic() -> None:
    """Two ledgers fed the same log, including rejected entries, end equal."""
    spec = JobSpec(rounds=3, max_participants=3, sync="bounded", staleness=1)
    job, create_body = create(spec)
    bodies = [create_body, b"junk", start(job, 1, INIT_KEY, (T0, T1))]
    r1 = result(job, 1, INIT_KEY, [update(T0, job, 1), update(T1, job, 1)])
    bodies += [commit(r1, VALIDATORS[:2]), commit(r1), commit(r1)]
    bodies += [start(job, 2, r1.model_key, (T1, T2))]
    a, b = TrainingLedger(VALIDATORS, VERIFIER), TrainingLedger(VALIDATORS, VERIFIER)
    ra = [a.apply(i, body) for i, body in enumerate(bodies, 1)]
    rb = [b.apply(i, body) for i, body in enumerate(bodies, 1)]
    assert ra == rb
    assert [x.status for x in ra] == ["ok", "rejected", "ok", "rejected", "ok", "rejected", "ok"]
    assert a.jobs == b.jobs and a.nodes == b.nodes
