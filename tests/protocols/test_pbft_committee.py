"""Committee changes: signed votes in the replicated state, the schedule, and a running switch.

The statemachine counts votes of members of the committee in force and makes a change pending
at a deterministic activation; ``CommitteeSchedule`` folds a log the same way; replicas of the old
epoch fill the gap to the activation with null batches and retire; replicas of the new epoch start
from the state after the old committee's last entry, in view 0, and never count an old-epoch vote.
"""

from __future__ import annotations

import contextlib
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode_protocols.pbft import (
    Broadcast,
    ClientRequest,
    Commit,
    Committee,
    CommitteeSchedule,
    CommitVote,
    LedgerState,
    LocalProtocolError,
    Message,
    MessageReceived,
    PbftConfig,
    Persist,
    PrePrepare,
    RemoteProtocolError,
    Replica,
    Request,
    Restarted,
    Send,
    SetCommittee,
    SetTimer,
    TimerFired,
    TimerKey,
    activation_seq,
    batch_digest,
    check_equivocation,
    decode_tx,
    encode,
    encode_tx,
    execute_batch,
    genesis,
    restore,
    sign,
    sign_committee_vote,
    snapshot,
)
from p2pnode_protocols.pbft.certificates import check_signed_by_member
from tests.protocols.pbft_helpers import make_keys, request

pytestmark = pytest.mark.timeout(60)

CONFIG = PbftConfig(checkpoint_interval=2, window=4, max_batch=4)


def _vote_request(signer: object, epoch: int, validators: tuple[bytes, ...], rid: int) -> Request:
    vote = sign_committee_vote(signer, epoch, validators)  # type: ignore[arg-type]
    req = Request(client=signer.node_id, request_id=rid, op=encode_tx(vote))  # type: ignore[attr-defined]
    return sign(req, signer)  # type: ignore[arg-type]


# -- the replicated state -------------------------------------------------------------------------


def test_a_quorum_of_signed_votes_makes_the_change_pending_and_it_activates() -> None:
    signers, verifier, client = make_keys(8)
    ids = tuple(s.node_id for s in signers)
    old, new = ids[:4], ids[4:]
    state = genesis(Committee(epoch=0, validators=old))
    # Seq 1: two votes (f+1 = 2 is not enough), an outsider's and a forged one.
    forged = SetCommittee(epoch=1, validators=new, voter=ids[2], sig=b"\x00" * 32)
    batch = (
        _vote_request(signers[0], 1, new, 1),
        _vote_request(signers[1], 1, new, 1),
        _vote_request(signers[5], 1, new, 1),
        sign(Request(client=client.node_id, request_id=1, op=encode_tx(forged)), client),
    )
    state, results = execute_batch(state, 1, batch, verifier=verifier, config=CONFIG)
    assert [r.status for r in results] == ["ok", "ok", "rejected", "rejected"]
    assert "member" in results[2].detail and "signature" in results[3].detail
    assert state.pending is None and len(state.votes) == 2
    # A vote for another epoch, and a repeat by a voter, change nothing.
    again = _vote_request(signers[0], 1, new, 2)
    wrong = _vote_request(signers[3], 2, new, 1)
    state, results = execute_batch(state, 2, (again, wrong), verifier=verifier, config=CONFIG)
    assert [r.status for r in results] == ["ok", "rejected"]
    assert state.pending is None
    # The third distinct member completes the quorum in entry 3.
    state, _ = execute_batch(
        state, 3, (_vote_request(signers[2], 1, new, 1),), verifier=verifier, config=CONFIG
    )
    at = activation_seq(3, CONFIG)
    assert state.pending == (Committee(epoch=1, validators=new), at)
    assert at == 2 + CONFIG.window + 1  # one past the checkpoint seq window entries later
    # A second change while one is pending is refused.
    state, results = execute_batch(
        state, 4, (_vote_request(signers[3], 1, new, 2),), verifier=verifier, config=CONFIG
    )
    assert results[0].status == "rejected"
    # The snapshot carries votes and the pending change.
    assert restore(snapshot(state)) == state
    for seq in range(5, at):
        state, _ = execute_batch(state, seq, (), verifier=verifier, config=CONFIG)
    assert state.committee == Committee(epoch=1, validators=new) and state.pending is None
    assert restore(snapshot(state)) == state


def test_without_a_verifier_a_vote_is_rejected_the_same_way_everywhere() -> None:
    signers, _, _ = make_keys(4)
    ids = tuple(s.node_id for s in signers)
    state = genesis(Committee(epoch=0, validators=ids))
    _, results = execute_batch(state, 1, (_vote_request(signers[0], 1, ids[:3], 1),))
    assert results[0].status == "rejected"


@settings(max_examples=40, deadline=None)
@given(
    seq=st.integers(1, 500),
    k=st.sampled_from([1, 2, 4, 16]),
    mult=st.integers(1, 3),
    executed=st.integers(0, 500),
)
def test_activation_is_above_every_seq_an_old_replica_could_have_accepted(
    seq: int, k: int, mult: int, executed: int
) -> None:
    """A replica that has not executed ``seq`` accepts at most stable + window, stable being a
    checkpoint at or below its executed seq: that is always below the activation."""
    cfg = PbftConfig(checkpoint_interval=k, window=k * mult)
    at = activation_seq(seq, cfg)
    executed = min(executed, seq - 1)
    stable = executed // k * k
    assert stable + cfg.window < at
    assert (at - 1) % k == 0 and at > seq


def test_the_schedule_folds_the_log_like_the_replicas() -> None:
    signers, verifier, client = make_keys(8)
    ids = tuple(s.node_id for s in signers)
    first = Committee(epoch=0, validators=ids[:4])
    sched = CommitteeSchedule(first, verifier=verifier, config=CONFIG)
    assert sched.current == first and sched.pending is None
    assert sched.committee_at(1) == first
    with pytest.raises(LocalProtocolError):
        sched.committee_at(1000)  # a later change could take over before it
    batches = [(_vote_request(signers[i], 1, ids[2:6], 1),) for i in range(3)]
    for seq, batch in enumerate(batches, 1):
        assert sched.observe(seq, batch) is None
    new = Committee(epoch=1, validators=ids[2:6])
    at = activation_seq(3, CONFIG)
    assert sched.pending == (new, at)
    assert sched.committee_of(1) == new and sched.committee_of(0) == first
    with pytest.raises(LocalProtocolError):
        sched.committee_of(2)
    assert sched.committee_at(at - 1) == first and sched.committee_at(at) == new
    with pytest.raises(LocalProtocolError):
        sched.observe(at, ())  # out of order
    switched = None
    for seq in range(4, at):
        switched = sched.observe(seq, (request(client, seq),))
    assert switched == new and sched.current == new and sched.pending is None
    assert sched.committee_at(2) == first and sched.committee_at(at) == new
    assert sched.start_of(1) == at and sched.epochs == ((1, first), (at, new))
    assert sched.base_of(1) == sched.state and sched.base_of(1).seq == at - 1


# -- messages are bound to their epoch -------------------------------------------------------------


def test_a_vote_of_another_epoch_never_counts() -> None:
    signers, verifier, _ = make_keys(4)
    ids = tuple(s.node_id for s in signers)
    e0, e1 = Committee(epoch=0, validators=ids), Committee(epoch=1, validators=ids)
    vote = sign(CommitVote(view=0, seq=9, digest=b"\x01" * 32, sender=ids[0]), signers[0])
    check_signed_by_member(e0, verifier, vote)
    with pytest.raises(RemoteProtocolError):
        check_signed_by_member(e1, verifier, vote)
    # Same slot in two epochs is no equivocation; same epoch is.
    other = sign(CommitVote(view=0, seq=9, digest=b"\x02" * 32, sender=ids[0], epoch=1), signers[0])
    with pytest.raises(RemoteProtocolError):
        check_equivocation(encode(vote), encode(other), e0, verifier)
    twin = sign(CommitVote(view=0, seq=9, digest=b"\x02" * 32, sender=ids[0]), signers[0])
    assert check_equivocation(encode(vote), encode(twin), e0, verifier) == ids[0]
    with pytest.raises(RemoteProtocolError):
        check_equivocation(encode(vote), b"\xff", e0, verifier)


# -- a running switch ------------------------------------------------------------------------------


class Net:
    """Replicas of several epochs on a lossless in-order network (at most one per node)."""

    def __init__(self, signers: list, verifier: object) -> None:
        self.signers = {s.node_id: s for s in signers}
        self.verifier = verifier
        self.replicas: dict[bytes, Replica] = {}
        self.queue: deque[tuple[bytes, bytes, Message]] = deque()
        self.commits: dict[bytes, list[Commit]] = {x: [] for x in self.signers}
        self.timers: dict[bytes, dict[TimerKey, SetTimer]] = {x: {} for x in self.signers}
        self.sent: list[tuple[bytes, Message]] = []
        self.durable: dict[bytes, object] = {}
        self.now = 0.0

    def start(self, node: bytes, committee: Committee, base: LedgerState | None = None) -> None:
        rep = Replica(
            committee=committee,
            config=CONFIG,
            signer=self.signers[node],
            verifier=self.verifier,  # type: ignore[arg-type]
            base=base,
        )
        self.replicas[node] = rep
        self.timers[node] = {}
        self.handle(node, Restarted(durable=self.durable.get(node)))  # type: ignore[arg-type]

    def stop(self, node: bytes) -> None:
        del self.replicas[node]
        self.durable.pop(node, None)

    def handle(self, node: bytes, event: object) -> None:
        rep = self.replicas[node]
        for e in rep.handle(event, self.now):  # type: ignore[arg-type]
            if isinstance(e, Broadcast):
                self.sent.append((node, e.msg))
                for dst in rep.committee.validators:
                    if dst != node:
                        self.queue.append((node, dst, e.msg))
            elif isinstance(e, Send):
                self.sent.append((node, e.msg))
                self.queue.append((node, e.to, e.msg))
            elif isinstance(e, SetTimer):
                self.timers[node][e.key] = e
            elif isinstance(e, Persist):
                self.durable[node] = e.state
            elif isinstance(e, Commit):
                self.commits[node].append(e)

    def deliver(self) -> None:
        while self.queue:
            src, dst, msg = self.queue.popleft()
            if dst in self.replicas:
                with contextlib.suppress(RemoteProtocolError):
                    self.handle(dst, MessageReceived(sender=src, msg=msg))

    def tick(self, rounds: int = 1) -> None:
        for _ in range(rounds):
            for node in list(self.replicas):
                t = self.timers[node].get(TimerKey.STATUS)
                if t is not None:
                    self.now = max(self.now, t.at)
                    self.handle(node, TimerFired(key=t.key, generation=t.generation))
            self.deliver()

    def log(self, node: bytes) -> dict[int, bytes]:
        return {c.seq: c.entry.digest for c in self.commits[node]}


@pytest.mark.parametrize("shape", ["disjoint", "overlapping"])
def test_a_committed_change_switches_the_running_committee(shape: str) -> None:
    signers, verifier, client = make_keys(8)
    ids = [s.node_id for s in signers]
    old = Committee(epoch=0, validators=tuple(ids[:4]))
    members = tuple(ids[4:]) if shape == "disjoint" else (ids[2], ids[3], ids[4], ids[5])
    new = Committee(epoch=1, validators=members)
    net = Net(signers, verifier)
    for x in old.validators:
        net.start(x, old)
    # Some traffic, then the three votes (2f+1 of 4); nothing else is submitted afterwards.
    net.handle(ids[0], ClientRequest(request=request(client, 1)))
    net.deliver()
    for i in range(3):
        net.handle(ids[i], ClientRequest(request=_vote_request(signers[i], 1, members, 1)))
        net.deliver()
    vote_seq = next(
        c.seq for c in net.commits[ids[0]] if any(r.client == ids[2] for r in c.entry.batch)
    )
    at = activation_seq(vote_seq, CONFIG)
    # The old primary fills the gap with null batches: the switch needs no client traffic.
    net.tick(10)
    for x in old.validators:
        rep = net.replicas[x]
        assert rep.executed_seq == at - 1 and rep.retired
        assert rep.ledger.committee == new
    assert all(len(c.entry.batch) == 0 for c in net.commits[ids[0]] if c.seq > vote_seq)
    # Nothing at or past the activation was ever proposed, prepared or committed by the old epoch.
    assert all(getattr(m, "seq", 0) < at for _, m in net.sent if getattr(m, "epoch", None) == 0)
    # A retired old replica ignores new requests (clients resend to the committee in force).
    old_rep = net.replicas[ids[0]]
    net.handle(ids[0], ClientRequest(request=request(client, 2)))
    assert not old_rep._pending
    base = old_rep.ledger
    # The switch: old replicas stop, new members start from the state after entry at - 1.
    sent_before = len(net.sent)
    for x in old.validators:
        net.stop(x)
    for x in new.validators:
        net.start(x, new, base)
        assert net.replicas[x].view == 0 and net.replicas[x].stable.seq == at - 1
    net.handle(members[1], ClientRequest(request=request(client, 2)))
    net.deliver()
    net.tick(2)
    for x in new.validators:
        log = net.log(x)
        assert at in log and net.replicas[x].executed_seq >= at
    assert {net.log(x)[at] for x in new.validators} == {net.log(members[0])[at]}
    # Every vote of the new epoch is bound to it; old validators sent nothing since.
    for sender, m in net.sent[sent_before:]:
        assert getattr(m, "epoch", 1) == 1 and sender in new.validators
    # The request committed once, in the new epoch.
    seqs = {
        c.seq
        for x in new.validators
        for c in net.commits[x]
        if any(r.client == client.node_id and r.request_id == 2 for r in c.entry.batch)
    }
    assert len(seqs) == 1 and min(seqs) >= at


def test_an_old_epoch_message_is_ignored_by_a_new_replica() -> None:
    signers, verifier, client = make_keys(4)
    ids = [s.node_id for s in signers]
    base = LedgerState(seq=8, committee=Committee(epoch=1, validators=tuple(ids)))
    net = Net(signers, verifier)
    net.start(ids[1], base.committee, base)
    batch = (request(client, 1),)
    stale = sign(
        PrePrepare(view=0, seq=9, digest=batch_digest(batch), batch=batch, sender=ids[0]),
        signers[0],
    )
    net.handle(ids[1], MessageReceived(sender=ids[0], msg=stale))
    assert not [m for _, m in net.sent if type(m).__name__ == "Prepare"]
    fresh = sign(
        PrePrepare(view=0, seq=9, digest=batch_digest(batch), batch=batch, sender=ids[0], epoch=1),
        signers[0],
    )
    net.handle(ids[1], MessageReceived(sender=ids[0], msg=fresh))
    prepares = [m for _, m in net.sent if type(m).__name__ == "Prepare"]
    assert len(prepares) == 1 and prepares[0].epoch == 1  # type: ignore[attr-defined]


def test_a_vote_decodes_and_keeps_its_fields() -> None:
    signers, _, _ = make_keys(4)
    ids = tuple(s.node_id for s in signers)
    vote = sign_committee_vote(signers[0], 3, ids)
    assert decode_tx(encode_tx(vote)) == vote
    with pytest.raises(ValueError):
        SetCommittee(epoch=0, validators=ids, voter=ids[0], sig=b"")


def test_a_primary_that_does_not_fill_the_gap_is_replaced() -> None:
    signers, verifier, _ = make_keys(4)
    ids = [s.node_id for s in signers]
    old = Committee(epoch=0, validators=tuple(ids))
    net = Net(signers, verifier)
    for x in ids:
        net.start(x, old)
    members = (*ids[1:], b"newcomer")
    for i in range(2):
        net.handle(ids[i], ClientRequest(request=_vote_request(signers[i], 1, members, 1)))
        net.deliver()
    backups = ids[1:]
    net.handle(ids[2], ClientRequest(request=_vote_request(signers[2], 1, members, 1)))
    # Deliver until the backups have executed the quorum vote; then the primary goes silent
    # before its null batches reach anyone (no client traffic follows).
    while not all(net.replicas[x].end is not None for x in backups):
        src, dst, msg = net.queue.popleft()
        if dst in net.replicas:
            net.handle(dst, MessageReceived(sender=src, msg=msg))
    net.stop(ids[0])
    net.queue = deque(q for q in net.queue if q[0] != ids[0])
    net.deliver()
    assert all(not net.replicas[x].retired for x in backups)
    for x in backups:
        t = net.timers[x][TimerKey.REQUEST]
        net.now = max(net.now, t.at)
        net.handle(x, TimerFired(key=t.key, generation=t.generation))
    net.deliver()
    net.tick(6)
    for x in backups:
        rep = net.replicas[x]
        assert rep.view >= 1 and rep.retired and rep.executed_seq == rep.end - 1  # type: ignore[operator]
