"""Verified work in the rounds protocol, sans I/O: flags in results, the spot-check lottery,
commit then reveal, the notice rate limit, admission and parameters through the trust hooks, a
committee switch, and the findings validators flag (censorship, a wrong aggregate)."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode_protocols.machine import MessageReceived, RemoteProtocolError
from p2pnode_protocols.rounds import (
    CommitClosed,
    Commitment,
    Computed,
    Flag,
    JobSpec,
    MembersSeen,
    Proposal,
    RateLimit,
    RoundsConfig,
    TrainingLedger,
    UpdateNotice,
    decode_message,
    decode_result,
    encode_message,
    encode_result,
    spot_checked,
)
from p2pnode_protocols.rounds.collection import CENSOR_CYCLES
from p2pnode_protocols.rounds.events import Committed
from p2pnode_protocols.rounds.messages import (
    commitment_digest,
    proposal_payload,
    result_digest,
    sign_commitment,
    sign_notice,
)
from tests.protocols.rounds_helpers import (
    OUTSIDER,
    TRAINERS,
    VALIDATORS,
    VERIFIER,
    Hooks,
    World,
    commit,
    create,
    result,
    signer,
    start,
    update,
)

pytestmark = pytest.mark.timeout(60)

T0, T1, T2 = TRAINERS[:3]
SPEC = JobSpec(rounds=1, max_participants=3, round_deadline=5.0)


def _world(spec: JobSpec = SPEC, **kw: object) -> tuple[World, str]:
    w = World(**kw)  # type: ignore[arg-type]
    job, body = create(spec)
    w.fold(body)
    return w, job


def _open_round(w: World, job: str) -> None:
    while not w.ref.jobs[job].assignment:
        w.commit_pending()


# -- flags in results ----------------------------------------------------------------------------


def test_a_result_with_flags_round_trips_and_one_without_keeps_the_old_form() -> None:
    ups = [update(T0, "j", 1), update(T1, "j", 1)]
    plain = result("j", 1, "b", ups)
    assert len(cbor2.loads(encode_result(plain))) == 11  # logs from before flags decode the same
    flags = (Flag(node=VALIDATORS[1], kind="wrong_aggregate", detail="ab" * 32),)
    contributors = (T0,)
    flagged = result("j", 1, "b", ups)
    object.__setattr__(flagged, "contributors", contributors)
    object.__setattr__(flagged, "outliers", (T1,))
    object.__setattr__(flagged, "flags", (Flag(node=T1, kind="copy", detail=T0.hex()), *flags))
    body = encode_result(flagged)
    assert decode_result(body) == flagged and decode_result(body).flagged("copy") == {T1}
    with pytest.raises(ValueError, match="contributor"):
        type(plain)(**{**_fields(plain), "flags": (Flag(node=T0, kind="spot_check"),)})
    with pytest.raises(ValueError, match="kind"):
        Flag(node=T0, kind="lazy")
    raw = cbor2.loads(body)
    raw[11] = []
    with pytest.raises(RemoteProtocolError):
        decode_result(cbor2.dumps(raw, canonical=True))


def _fields(r: object) -> dict[str, object]:
    return {k: getattr(r, k) for k in type(r).__dataclass_fields__}  # type: ignore[attr-defined]


def test_commit_then_reveal_messages_round_trip() -> None:
    d = commitment_digest("j", 1, T0, "key", b"salt")
    c = sign_commitment(signer(T0), "j", 1, d)
    assert decode_message(encode_message(c)) == c and c.verify(VERIFIER)
    n = sign_notice(signer(T0), "j", 1, "key", 10, 5, salt=b"salt")
    assert decode_message(encode_message(n)) == n
    legacy = UpdateNotice(job="j", update=n.update)
    assert len(cbor2.loads(encode_message(legacy))) == 3


# -- the spot-check lottery ----------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 12),
    fraction=st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0]),
    base=st.text(min_size=1, max_size=8),
)
def test_spot_checked_picks_ceil_fraction_of_the_fresh_updates_deterministically(
    n: int, fraction: float, base: str
) -> None:
    nodes = [f"n{i}".encode() for i in range(n)]
    ups = [update(x, "j", 2) for x in nodes] + [update(b"stale", "j", 1)]
    picked = spot_checked("j", 2, base, ups, fraction)
    assert picked == spot_checked("j", 2, base, list(reversed(ups)), fraction)
    assert set(picked) <= set(nodes) and list(picked) == sorted(picked)
    expected = 0 if fraction == 0 else min(n, -(-int(fraction * 100) * n // 100))
    assert len(picked) == expected


def test_spot_checked_depends_on_the_revealed_keys() -> None:
    nodes = [f"n{i}".encode() for i in range(8)]
    draws = {
        spot_checked("j", 1, "b", [update(x, "j", 1, key=f"{x!r}-{salt}") for x in nodes], 0.25)
        for salt in range(20)
    }
    assert len(draws) > 1


# -- commit then reveal --------------------------------------------------------------------------


def test_a_job_under_commit_then_reveal_closes_the_commit_phase_and_commits() -> None:
    w, job = _world(JobSpec(rounds=2, max_participants=3, round_deadline=5.0))
    w.settle(timers=True)
    assert w.ref.jobs[job].status == "completed"
    assert all(len(r.updates) == 3 for r in w.committed)
    v = w.machines[VALIDATORS[0]]
    assert "reveal_without_commitment" not in v.counters


def test_a_reveal_needs_its_commitment_received_before_the_phase_closed() -> None:
    w, job = _world()
    _open_round(w, job)
    v = w.machines[VALIDATORS[0]]
    # No commitment: refused.
    n0 = sign_notice(signer(T0), job, 1, "k0", 10, 5, salt=b"s0")
    v.handle(MessageReceived(sender=T0, msg=n0), 0.0)
    assert v.counters["reveal_without_commitment"] == 1
    # A commitment to another key: the reveal does not match.
    c0 = sign_commitment(signer(T0), job, 1, commitment_digest(job, 1, T0, "other", b"s0"))
    v.handle(MessageReceived(sender=T0, msg=c0), 0.0)
    v.handle(MessageReceived(sender=T0, msg=n0), 0.0)
    assert v.counters["reveal_without_commitment"] == 2
    # The commit window ends: a commitment now comes too late.
    w.fire(next(k for k in w.timers if k[0] == VALIDATORS[0] and k[1][0] == "commit"))
    c1 = sign_commitment(signer(T1), job, 1, commitment_digest(job, 1, T1, "k1", b"s1"))
    v.handle(MessageReceived(sender=T1, msg=c1), w.now)
    assert v.counters["commitment_late"] == 1
    # A forged commitment is refused.
    forged = Commitment(job=job, round=1, node=T2, digest=b"\0" * 32, sig=b"x" * 32)
    v.handle(MessageReceived(sender=T2, msg=forged), w.now)
    assert v.counters["commitment_late"] == 2  # closed first: no signature check needed


def test_a_trainer_reveals_only_once_the_commit_phase_closed() -> None:
    w, job = _world()
    _open_round(w, job)
    while w.trainings:
        w.train()
    assert not any(isinstance(m.msg, UpdateNotice) for m in w.net)  # commitments only
    w.settle()
    assert len(w.committed) == 1  # every trainer committed: closed, revealed, aggregated


# -- rate limit, admission, parameters, committee ------------------------------------------------


def test_rate_limit_counts_per_peer_per_minute() -> None:
    rl = RateLimit(3)
    assert [rl.allow(b"a", 0.0) for _ in range(5)] == [True, True, True, False, False]
    assert rl.allow(b"b", 1.0)
    assert rl.allow(b"a", 60.0)
    assert RateLimit(0).allow(b"a", 0.0)


def test_a_flood_of_notices_above_the_limit_is_dropped_and_counted() -> None:
    cfg = RoundsConfig(start_timeout=1.0, result_timeout=2.0, max_notices_per_minute=5)
    w, job = _world(config=cfg)
    _open_round(w, job)
    v = w.machines[VALIDATORS[0]]
    n = sign_notice(signer(T0), job, 1, "k", 10, 5, salt=b"s")
    for _ in range(20):
        v.handle(MessageReceived(sender=T0, msg=n), 0.0)
    assert v.counters["rate_limited"] == 15
    w.settle(timers=True)  # the honest protocol still runs (T0's own messages were dropped)
    assert w.ref.jobs[job].status == "completed"


def test_a_node_not_admitted_is_not_selected_nor_heard() -> None:
    hooks = Hooks(denied=[T1])
    w, job = _world(trust=hooks)
    _open_round(w, job)
    assert T1 not in w.ref.jobs[job].assigned[1]
    # The ledger refuses a StartRound naming it, and validators drop its messages.
    other = TrainingLedger(VALIDATORS, VERIFIER, Hooks(denied=[T1]))
    other.apply(1, w.log[0])
    a = other.apply(2, start(job, 1, "init-model", [T0, T1]))
    assert a.status == "rejected" and "not admitted" in a.reason
    v = w.machines[VALIDATORS[0]]
    c = sign_commitment(signer(T1), job, 1, commitment_digest(job, 1, T1, "k", b"s"))
    v.handle(MessageReceived(sender=T1, msg=c), 0.0)
    assert v.counters["notice_not_admitted"] == 1
    w.settle(timers=True)
    (r,) = w.committed
    assert T1 not in {u.node for u in r.updates}


def test_governance_min_participants_raises_the_job_minimum() -> None:
    led = TrainingLedger(VALIDATORS, VERIFIER, Hooks(params={"min_participants": 3}))
    job, body = create(JobSpec(rounds=1, max_participants=3))
    led.apply(1, body)
    assert led.apply(2, start(job, 1, "init-model", [T0, T1])).status == "rejected"
    assert led.apply(3, start(job, 1, "init-model", [T0, T1, T2])).status == "ok"
    # A machine selects nobody while fewer candidates than that are eligible.
    w, job2 = _world(trust=Hooks(params={"min_participants": 4}))
    w.settle(timers=True, steps=200)
    assert w.ref.jobs[job2].assignment is None and not w.committed


def test_round_committed_and_trust_bodies_reach_the_hooks_in_log_order() -> None:
    hooks = Hooks()
    led = TrainingLedger(VALIDATORS, VERIFIER, hooks)
    job, body = create(JobSpec(rounds=1, max_participants=2))
    led.apply(1, body)
    led.apply(2, start(job, 1, "init-model", [T0, T1]))
    assert led.apply_trust(3, b"ok-1") == "" and led.apply_trust(3, b"nope") != ""
    r = result(job, 1, "init-model", [update(T0, job, 1), update(T1, job, 1)])
    assert led.apply(4, commit(r)).status == "ok"
    assert hooks.rounds == [(4, job, 1, VALIDATORS[:3])]
    assert [s for s, _ in hooks.bodies] == [3, 3]
    assert TrainingLedger(VALIDATORS, VERIFIER).apply_trust(1, b"ok") == "no trust ledger"


def test_a_committed_committee_switch_changes_who_attests() -> None:
    w, job = _world()
    m = w.machines[OUTSIDER]
    new = (*VALIDATORS[1:], OUTSIDER)
    assert not m.is_validator
    m.handle(Committed(seq=2, bodies=(), committee=new), 0.0)
    assert m.is_validator and m.committee == new and m.ledger.committee == new
    # The ledger checks attestations against the committee in force.
    led = TrainingLedger(VALIDATORS, VERIFIER)
    led.apply(1, w.log[0])
    led.apply(2, start(job, 1, "init-model", [T0]))
    led.set_committee(new)
    r = result(job, 1, "init-model", [update(T0, job, 1)], proposer=VALIDATORS[1])
    assert led.apply(3, commit(r, VALIDATORS[:3])).status == "rejected"
    assert led.apply(4, commit(r, new[:3])).status == "ok"


# -- findings about validators -------------------------------------------------------------------


def _proposer_answers(w: World, job: str, drop: int = 0, model_key: str | None = None) -> bytes:
    """Run until the first proposer aggregates; answer for it with a result that leaves out
    ``drop`` updates or names another model key. Returns the proposer."""
    while not w.aggregates:
        w.settle(steps=1)
    node, a = w.aggregates.pop(0)
    r = result(job, 1, a.base_key, a.updates[drop:], proposer=node, model_key=model_key)
    w.handle(node, Computed(job=job, round=1, result=r))
    return node


def test_a_censoring_proposer_is_refused_and_the_next_result_flags_it() -> None:
    cfg = RoundsConfig(start_timeout=1.0, result_timeout=2.0, censor_grace=0.0)
    w, job = _world(config=cfg)
    _open_round(w, job)
    censor = _proposer_answers(w, job, drop=1)
    w.settle(timers=True)
    (r,) = w.committed
    assert len(r.updates) == 3 and r.proposer != censor
    assert [(f.node, f.kind) for f in r.flags] == [(censor, "censorship")]
    assert any("censorship" in e.reason for _, e in w.evidence)


def test_a_wrong_aggregate_is_flagged_in_the_result_that_commits_the_round() -> None:
    w, job = _world()
    _open_round(w, job)
    liar = _proposer_answers(w, job, model_key="m-wrong")
    w.settle(timers=True)
    (r,) = w.committed
    assert r.proposer != liar
    (flag,) = r.flags
    assert (flag.node, flag.kind) == (liar, "wrong_aggregate") and len(flag.detail) == 64


def test_a_validator_does_not_attest_a_flag_it_did_not_find() -> None:
    w, job = _world()
    _open_round(w, job)
    while not w.aggregates:
        w.settle(steps=1)
    node, a = w.aggregates.pop(0)
    # The proposer slanders another validator: nobody else found anything against it.
    victim = next(v for v in VALIDATORS if v != node)
    v = w.machines[node]
    v._refused[(job, 1)] = {victim: Flag(node=victim, kind="wrong_aggregate", detail="00")}
    r = result(job, 1, a.base_key, a.updates, proposer=node)
    w.handle(node, Computed(job=job, round=1, result=r))
    w.settle(timers=True)
    (committed,) = w.committed
    assert committed.proposer != node and committed.flags == ()


def test_the_selector_skips_nodes_over_the_hourly_task_limit() -> None:
    w, job = _world(
        JobSpec(rounds=3, max_participants=3, round_deadline=5.0),
        trust=Hooks(params={"max_tasks_per_node_per_hour": 2}),
    )
    w.settle(timers=True, steps=600)
    state = w.ref.jobs[job]
    assert len(state.history) == 2  # two tasks each, then nobody may take a third this hour
    assert state.assignment is None
    assert w.machines[VALIDATORS[0]].counters.get("selector_over_task_limit", 0) >= 1
    # An hour later (by the validators' clocks) they may again.
    w.now += 3601
    for v in VALIDATORS:
        w.handle(v, MembersSeen(candidates=w.candidates()))
    w.settle(timers=True, steps=600)
    assert w.ref.jobs[job].status == "completed"


def test_censorship_needs_an_update_f_plus_1_validators_hold() -> None:
    """A proposal without T0's update: no censorship while the checking validator alone holds
    it (the proposer may never have had it), censorship once another validator relayed it."""
    cfg = RoundsConfig(start_timeout=1.0, result_timeout=2.0, censor_grace=0.0)
    w, job = _world(config=cfg)
    _open_round(w, job)
    iso, proposer, relayer = VALIDATORS[1], VALIDATORS[2], VALIDATORS[3]
    while w.trainings:
        w.train()
    while w.net:  # iso alone hears the trainers, and its relays are lost
        m = w.net[0]
        to_iso = m.dst == iso and m.src in TRAINERS
        if not (to_iso or (m.src == iso and isinstance(m.msg, CommitClosed))):
            w.net.pop(0)
            continue
        if isinstance(m.msg, UpdateNotice) and m.msg.update.node == T0:
            reveal = m.msg
        w.deliver()
    v = w.machines[iso]
    held = {u.node: u for u in v.collected(job)}
    assert set(held) == {T0, T1, T2} and v._rounds[job].closed_at is not None

    def propose(model_key: str) -> list[object]:
        r = result(
            job, 1, "init-model", [held[T1], held[T2]], proposer=proposer, model_key=model_key
        )
        body = encode_result(r)
        sig = signer(proposer).sign(proposal_payload(result_digest(body)))
        msg = Proposal(result=body, sig=sig)
        return v.handle(MessageReceived(sender=proposer, msg=msg), 1.0)  # type: ignore[return-value]

    out = propose("m-1")
    assert [type(e).__name__ for e in out] == ["RoundPhase", "Aggregate"]  # checked, not refused
    # Another validator relays T0's reveal to iso: now f+1 = 2 validators hold it.
    v.handle(MessageReceived(sender=relayer, msg=reveal), 1.0)
    out = propose("m-2")
    assert [type(e).__name__ for e in out] == ["BadProposal"]
    assert out[0].reason.startswith("censorship")  # type: ignore[attr-defined]
    assert v._refused[(job, 1)][proposer].kind == "censorship"
    # Two full cycles of turns later the round is still open: liveness comes first, and the
    # same proposal, proposed again unchanged (the same digest), is judged again and no
    # longer refused for it.
    v._rounds[job].attempt = CENSOR_CYCLES * len(VALIDATORS)
    out = propose("m-2")
    assert [type(e).__name__ for e in out] == ["RoundPhase", "Aggregate"]
    assert v.counters["censorship_waived"] == 1


def test_findings_no_quorum_shares_are_dropped_after_a_cycle_of_turns() -> None:
    """Each validator holds a finding against a different one (as after a partition, when
    each refused another's proposal): no proposal carrying them can gather a quorum. After
    every validator had its turn, proposers leave validator flags out and the round commits
    (a chaos run stalled here for good before)."""
    w, job = _world()
    _open_round(w, job)
    for k, v in enumerate(VALIDATORS):
        other = VALIDATORS[(k + 1) % len(VALIDATORS)]
        w.machines[v]._refused[(job, 1)] = {
            other: Flag(node=other, kind="censorship", detail=f"{k:064x}")
        }
    w.settle(timers=True)
    (committed,) = w.committed
    assert committed.flags == ()
    assert any(w.machines[v].counters.get("proposer_rotated", 0) for v in VALIDATORS)
