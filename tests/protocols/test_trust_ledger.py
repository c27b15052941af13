"""The trust ledger on its own: accounts and signed transactions, rewards of committed rounds,
penalties with evidence, governance, admission, and that a replay gives the same state."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from p2pnode_protocols.pbft import PrePrepare, encode, sign
from p2pnode_protocols.pbft.codec import batch_digest
from p2pnode_protocols.rounds import JobSpec, TrainingLedger
from p2pnode_protocols.trust import (
    UNIT,
    Accuse,
    Propose,
    Stake,
    Tick,
    Transfer,
    TrustLedger,
    Unstake,
    Vote,
    encode_tx,
    proposal_id,
    sign_tx,
)

from .rounds_helpers import (
    TRAINERS,
    VALIDATORS,
    VERIFIER,
    create,
    result,
    signer,
    start,
    update,
)

GENESIS = {v: 1000 * UNIT for v in VALIDATORS}


def ledger(**params: int | float) -> TrustLedger:
    return TrustLedger(verifier=VERIFIER, committee=VALIDATORS, genesis=GENESIS, params=params)


def signed(node: bytes, tx: object) -> bytes:
    return encode_tx(sign_tx(signer(node), tx))  # type: ignore[arg-type]


class Log:
    """Feeds a ledger transactions at growing seqs."""

    def __init__(self, led: TrustLedger) -> None:
        self.led = led
        self.seq = 0
        self.nonce = 0

    def tx(self, node: bytes, tx: object) -> str:
        self.seq += 1
        return self.led.apply(self.seq, signed(node, tx))

    def raw(self, body: bytes) -> str:
        self.seq += 1
        return self.led.apply(self.seq, body)

    def ticks(self, n: int) -> None:
        for _ in range(n):
            self.raw(encode_tx(Tick()))

    def n(self) -> int:
        self.nonce += 1
        return self.nonce


def test_genesis_stake_and_moves_with_signatures_and_nonces() -> None:
    led = ledger()
    log = Log(led)
    v0, t0 = VALIDATORS[0], TRAINERS[0]
    assert led.peek(v0).stake == 1000 * UNIT
    assert log.tx(v0, Unstake(node=v0, amount=100 * UNIT, nonce=5)) == ""
    assert log.tx(v0, Transfer(node=v0, to=t0, amount=40 * UNIT, nonce=6)) == ""
    assert led.peek(t0).balance == 40 * UNIT
    assert log.tx(t0, Stake(node=t0, amount=30 * UNIT, nonce=1)) == ""
    assert (led.peek(t0).balance, led.peek(t0).stake) == (10 * UNIT, 30 * UNIT)
    # a replayed nonce, a forged signature, an overdraft: refused, nothing changes
    assert "nonce" in log.tx(t0, Stake(node=t0, amount=1, nonce=1))
    forged = sign_tx(signer(t0), Transfer(node=t0, to=v0, amount=1, nonce=9))
    assert "signature" in log.raw(
        encode_tx(Transfer(node=v0, to=t0, amount=1, nonce=9, sig=forged.sig))
    )
    assert "balance" in log.tx(t0, Transfer(node=t0, to=v0, amount=11 * UNIT, nonce=2))
    assert "bad trust transaction" in log.raw(b"\x80")
    assert (led.peek(t0).balance, led.peek(t0).stake) == (10 * UNIT, 30 * UNIT)
    moved = [(e.reason, e.balance, e.stake) for e in led.entries if e.node == t0]
    assert moved == [("transfer", 40 * UNIT, 0), ("stake", -30 * UNIT, 30 * UNIT)]


def _round(led: TrustLedger, nodes: tuple[bytes, ...], rnd: int = 1, **kw: object):
    """A job with its round ``rnd`` started by the rounds ledger, and a result of ``nodes``."""
    training = TrainingLedger(VALIDATORS, VERIFIER)
    spec = JobSpec(
        name="t", rounds=5, shards=4, min_participants=1, max_participants=4, min_updates=1
    )
    job_id, body = create(spec)
    training.apply(1, body)
    training.apply(2, start(job_id, 1, "init-model", nodes))
    job = training.jobs[job_id]
    ups = [update(n, job_id, 1) for n in nodes]
    return job, result(job_id, 1, "init-model", ups, **kw)  # type: ignore[arg-type]


def test_rewards_pay_contributors_by_quality_and_reliability_and_attesters() -> None:
    led = ledger()
    job, r = _round(led, TRAINERS[:3])
    scores = {TRAINERS[0]: 0.3, TRAINERS[1]: 0.1, TRAINERS[2]: 0.2}
    r = type(r)(
        **{
            **{k: getattr(r, k) for k in r.__dataclass_fields__},
            "scores": tuple(sorted(scores.items())),
        }
    )
    led.round_committed(10, job, r, VALIDATORS[:3])
    paid = {e.node: e.balance for e in led.entries if e.reason == "reward"}
    # shares 0.5, 1/6, 1/3 of 0.6, times 3 contributors: quality 1.5, 0.5, 1.0; reliability 2/3
    bonus = 1 + 0.5 * (2 / 3)
    want = {TRAINERS[0]: 1.5, TRAINERS[1]: 0.5, TRAINERS[2]: 1.0}
    assert paid == {n: pytest.approx(10 * UNIT * q * bonus, abs=1) for n, q in want.items()}
    validators = {e.node for e in led.entries if e.reason == "validator_reward"}
    assert validators == set(VALIDATORS[:3])
    assert all(e.ref == f"{job.id}/1" for e in led.entries if e.seq == 10)


def test_repeated_outliers_are_slashed_once_per_offence_with_the_rounds_as_evidence() -> None:
    led = ledger(outlier_limit=2, outlier_window=5, slashing_rate=0.5)
    log = Log(led)
    v0, t0 = VALIDATORS[0], TRAINERS[0]
    assert log.tx(v0, Unstake(node=v0, amount=100 * UNIT, nonce=log.n())) == ""
    assert log.tx(v0, Transfer(node=v0, to=t0, amount=100 * UNIT, nonce=log.n())) == ""
    job, r = _round(led, TRAINERS[:2])
    flagged = type(r)(**{**{k: getattr(r, k) for k in r.__dataclass_fields__}, "outliers": (t0,)})
    led.round_committed(20, job, flagged, VALIDATORS[:3])
    assert not led.evidence  # one outlier is not yet a pattern
    led.round_committed(21, job, flagged, VALIDATORS[:3])
    (record,) = led.evidence.values()
    assert (record.offender, record.kind, record.penalty) == (t0, "outliers", 50 * UNIT)
    assert "seq 20" in record.detail and "seq 21" in record.detail
    assert led.peek(t0).balance == 50 * UNIT  # and no reward for an outlier's update
    assert not [e for e in led.entries if e.node == t0 and e.reason == "reward"]


def _preprepare(node: bytes, batch_op: bytes):
    from p2pnode_protocols.pbft import Request

    req = sign(Request(client=b"c", request_id=1, op=batch_op), signer(b"c"))
    pp = PrePrepare(view=0, seq=7, digest=batch_digest((req,)), batch=(req,), sender=node)
    return encode(sign(pp, signer(node)))


def test_equivocation_is_verified_from_the_two_messages_and_penalised_once() -> None:
    led = ledger(slashing_rate=0.1)
    log = Log(led)
    v0 = VALIDATORS[0]
    a, b = _preprepare(v0, b"x"), _preprepare(v0, b"y")
    assert "not evidence" in log.raw(encode_tx(Accuse(kind="equivocation", first=a, second=a)))
    outsider = _preprepare(TRAINERS[0], b"x"), _preprepare(TRAINERS[0], b"y")
    assert "not evidence" in log.raw(
        encode_tx(Accuse(kind="equivocation", first=outsider[0], second=outsider[1]))
    )
    assert log.raw(encode_tx(Accuse(kind="equivocation", first=a, second=b))) == ""
    (record,) = led.evidence.values()
    assert (record.offender, record.kind) == (v0, "equivocation")
    assert led.peek(v0).stake == 900 * UNIT
    assert "already" in log.raw(encode_tx(Accuse(kind="equivocation", first=b, second=a)))
    assert led.peek(v0).stake == 900 * UNIT


def _propose(log: Log, kind: str, change: dict, node: bytes = VALIDATORS[0]) -> str:
    body = signed(node, Propose(node=node, kind=kind, change=change, nonce=log.n()))
    assert log.raw(body) == ""
    return proposal_id(body)


def test_a_passed_param_change_applies_at_the_epoch_boundary() -> None:
    led = ledger(voting_period=5, epoch_length=16)
    log = Log(led)
    pid = _propose(log, "param", {"min_participants": 3})  # seq 1, deadline 6
    # votes at 2..4, a refused unstake at 5, refused votes at 6 and 7
    for v in VALIDATORS[:3]:
        assert log.tx(v, Vote(node=v, proposal=pid, yes=True, nonce=log.n())) == ""
    assert "voted" in log.tx(
        VALIDATORS[0], Vote(node=VALIDATORS[0], proposal=pid, yes=False, nonce=log.n())
    )
    assert "no such" in log.tx(
        VALIDATORS[3], Vote(node=VALIDATORS[3], proposal="0" * 16, yes=True, nonce=log.n())
    )
    log.ticks(2)  # seq 8: tallied (passed), activates at 16
    p = led.proposals[pid]
    assert (p.status, p.activates_at, p.yes) == ("passed", 16, 3000 * UNIT)
    assert "is passed" in log.tx(
        VALIDATORS[3], Vote(node=VALIDATORS[3], proposal=pid, yes=False, nonce=log.n())
    )
    assert led.param("min_participants") == 0
    while log.seq < 15:
        log.ticks(1)
    assert led.param("min_participants") == 0
    log.ticks(1)
    assert (led.param("min_participants"), p.status) == (3, "enacted")


def test_a_proposal_without_quorum_expires_and_a_rejected_one_changes_nothing() -> None:
    led = ledger(voting_period=3)
    log = Log(led)
    lone = _propose(log, "param", {"base_reward": 1})
    log.tx(VALIDATORS[0], Vote(node=VALIDATORS[0], proposal=lone, yes=True, nonce=log.n()))
    no = _propose(log, "param", {"base_reward": 2})
    for v in VALIDATORS[:3]:
        log.tx(v, Vote(node=v, proposal=no, yes=v == VALIDATORS[0], nonce=log.n()))
    log.ticks(40)
    assert (led.proposals[lone].status, led.proposals[no].status) == ("expired", "rejected")
    assert led.param("base_reward") == 10 * UNIT


def test_proposals_need_stake_and_a_valid_change() -> None:
    led = ledger()
    log = Log(led)
    t0 = TRAINERS[0]
    assert "stake" in log.tx(t0, Propose(node=t0, kind="param", change={"min_stake": 1}, nonce=1))
    v0 = VALIDATORS[0]
    for change, kind, why in [
        ({"nope": 1}, "param", "unknown parameter"),
        ({"slashing_rate": 2.0}, "param", "must be in"),
        ({"min_participants": 1.5}, "param", "integer"),
        ({"validators": list(VALIDATORS)}, "committee", "in force"),
        ({"who": 1}, "admission", "admission keys"),
    ]:
        assert why in log.tx(v0, Propose(node=v0, kind=kind, change=change, nonce=log.n()))


def test_admission_policy_gates_trainers() -> None:
    led = ledger(voting_period=2, epoch_length=4)
    log = Log(led)
    t0, t1 = TRAINERS[:2]
    assert led.admits(t0, "trainer") == ""
    assert "validator" in led.admits(t0, "validator")
    pid = _propose(log, "admission", {"min_stake": 5 * UNIT, "allowlist": [t0, t1]})
    for v in VALIDATORS[:3]:
        log.tx(v, Vote(node=v, proposal=pid, yes=True, nonce=log.n()))
    log.ticks(8)
    assert "allowlist" in led.admits(TRAINERS[2], "trainer")
    assert "stake 0 below" in led.admits(t0, "trainer")
    log.tx(VALIDATORS[0], Unstake(node=VALIDATORS[0], amount=10 * UNIT, nonce=log.n()))
    log.tx(VALIDATORS[0], Transfer(node=VALIDATORS[0], to=t0, amount=10 * UNIT, nonce=log.n()))
    log.tx(t0, Stake(node=t0, amount=5 * UNIT, nonce=1))
    assert led.admits(t0, "trainer") == ""


_ACTORS = VALIDATORS + TRAINERS[:2]


@st.composite
def _txs(draw: st.DrawFn) -> list[bytes]:
    out = []
    nonces = dict.fromkeys(_ACTORS, 0)
    proposals: list[str] = []
    for _ in range(draw(st.integers(1, 30))):
        node = draw(st.sampled_from(_ACTORS))
        nonces[node] += draw(st.integers(0, 1))
        kind = draw(st.sampled_from(["stake", "unstake", "transfer", "propose", "vote", "tick"]))
        amount = draw(st.integers(1, 2000)) * UNIT
        if kind == "stake":
            tx = Stake(node=node, amount=amount, nonce=nonces[node] or 1)
        elif kind == "unstake":
            tx = Unstake(node=node, amount=amount, nonce=nonces[node] or 1)
        elif kind == "transfer":
            to = draw(st.sampled_from(_ACTORS))
            tx = Transfer(node=node, to=to, amount=amount, nonce=nonces[node] or 1)
        elif kind == "propose":
            value = draw(st.integers(0, 5))
            tx = Propose(
                node=node, kind="param", change={"min_participants": value}, nonce=nonces[node] or 1
            )
        elif kind == "vote" and proposals:
            tx = Vote(
                node=node,
                proposal=draw(st.sampled_from(proposals)),
                yes=draw(st.booleans()),
                nonce=nonces[node] or 1,
            )
        else:
            out.append(encode_tx(Tick()))
            continue
        body = signed(node, tx)
        if kind == "propose":
            proposals.append(proposal_id(body))
        out.append(body)
    return out


@settings(max_examples=60, deadline=None)
@given(_txs())
def test_replaying_the_same_log_gives_the_same_state_and_units_are_conserved(
    txs: list[bytes],
) -> None:
    a, b = ledger(voting_period=3, epoch_length=4), ledger(voting_period=3, epoch_length=4)
    for seq, body in enumerate(txs, 1):
        assert a.apply(seq, body) == b.apply(seq, body)
    assert a.digest() == b.digest()
    held = sum(x.balance + x.stake for x in a.accounts.values())
    assert held == sum(GENESIS.values())  # no rewards here: moves only move units
    assert all(x.balance >= 0 and x.stake >= 0 for x in a.accounts.values())


def test_the_listener_hears_every_entry_and_record() -> None:
    heard: list[object] = []
    led = TrustLedger(
        verifier=VERIFIER, committee=VALIDATORS, genesis=GENESIS, listener=heard.append
    )
    assert len(heard) == len(VALIDATORS)  # the genesis entries
    Log(led).raw(encode_tx(Tick()))
    assert len(heard) == len(VALIDATORS)


@pytest.mark.parametrize("bad", [b"", b"\xa0", encode_tx(Tick()) + b"\x00"])
def test_malformed_bodies_are_rejected_not_raised(bad: bytes) -> None:
    assert "bad trust transaction" in ledger().apply(1, bad)


def test_an_unsolicited_notice_is_checked_against_the_committed_tasks() -> None:
    from p2pnode_protocols.rounds import UpdateNotice, encode_message

    led = ledger()
    training = TrainingLedger(VALIDATORS, VERIFIER, trust=led)
    spec = JobSpec(name="t", rounds=5, shards=4, min_participants=1, max_participants=4)
    job_id, body = create(spec)
    training.apply(1, body)
    training.apply(2, start(job_id, 1, "init-model", TRAINERS[:2]))
    log = Log(led)
    log.seq = 2

    def accuse(node: bytes, rnd: int = 1) -> str:
        notice = encode_message(UpdateNotice(job=job_id, update=update(node, job_id, rnd)))
        return log.raw(encode_tx(Accuse(kind="unsolicited", first=notice, second=b"")))

    assert "had a task" in accuse(TRAINERS[0])
    assert "not known" in accuse(TRAINERS[3], rnd=2)  # round 2 has not started
    forged = UpdateNotice(job=job_id, update=update(TRAINERS[3], job_id, 1))
    bad = type(forged.update)(
        **{
            **{k: getattr(forged.update, k) for k in ("node", "round", "key", "size", "samples")},
            "sig": b"x" * 32,
        }
    )
    bad_body = encode_message(UpdateNotice(job=job_id, update=bad))
    assert "signature" in log.raw(encode_tx(Accuse(kind="unsolicited", first=bad_body, second=b"")))
    assert accuse(TRAINERS[3]) == ""
    (record,) = led.evidence.values()
    assert (record.offender, record.kind, record.ref) == (TRAINERS[3], "unsolicited", f"{job_id}/1")
    assert "already" in accuse(TRAINERS[3])
