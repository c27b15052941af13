"""Scripted scenarios for the PBFT replica over a fake link (no simulator, no randomness)."""

from __future__ import annotations

import dataclasses

import pytest

from p2pnode_protocols.pbft import (
    CertifiedEntry,
    ClientRequest,
    CommitVote,
    LocalProtocolError,
    MessageReceived,
    PbftConfig,
    Prepare,
    PrePrepare,
    PrimarySuspected,
    RemoteProtocolError,
    Replica,
    ReplicaStatus,
    Restarted,
    TimerKey,
    batch_digest,
    check_certified_entry,
    check_evidence,
    sign,
)
from tests.protocols.pbft_helpers import Cluster, request

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("ed25519", [False, True])
@pytest.mark.parametrize("wire", [False, True])
def test_normal_case_commits_in_order_everywhere(ed25519: bool, wire: bool) -> None:
    c = Cluster(4, ed25519=ed25519, wire=wire)
    for rid in range(1, 8):
        c.submit(rid % 4, request(c.client, rid))
        c.deliver_all()
    for node in c.ids:
        seqs = [e.seq for e in c.commits[node]]
        assert seqs == list(range(1, len(seqs) + 1))
        reqs = [(r.request_id) for e in c.commits[node] for r in e.entry.batch]
        assert sorted(reqs) == list(range(1, 8))
    assert len({tuple(c.committed_digests(x).items()) for x in c.ids}) == 1
    # Every certificate verifies for an outside reader.
    for e in c.commits[c.ids[2]]:
        ce = CertifiedEntry(entry=e.entry, certificate=e.certificate)
        check_certified_entry(c.committee, c.verifier, ce)
    # Checkpoints every 2 entries became stable and the log was collected.
    assert all(c.replica(i).stable.seq >= 6 for i in range(4))


def test_duplicate_request_executes_once() -> None:
    c = Cluster(4)
    req = request(c.client, 1)
    c.submit(0, req)
    c.deliver_all()
    c.submit(1, req)  # the client retried after the commit
    for node in c.ids:
        c.handle(node, MessageReceived(sender=c.client.node_id, msg=req))
    c.deliver_all()
    for node in c.ids:
        assert [r.request_id for e in c.commits[node] for r in e.entry.batch] == [1]


def test_forged_messages_fail_real_ed25519_verification() -> None:
    c = Cluster(4, ed25519=True)
    primary, backup, victim = c.ids[0], c.ids[1], c.ids[2]
    req = request(c.client, 1)
    c.submit(0, req)
    pp = next(m for s, d, m in c.queue if isinstance(m, PrePrepare))
    c.queue.clear()
    # A backup signs a pre-prepare under the primary's name: its signature does not match.
    forged = dataclasses.replace(pp, signature=c.signers[1].sign(b"whatever"))
    with pytest.raises(RemoteProtocolError):
        c.handle(backup, MessageReceived(sender=victim, msg=forged))
    # A prepare "from" replica 2, signed by replica 3.
    prep = Prepare(view=0, seq=1, digest=pp.digest, sender=victim)
    prep = dataclasses.replace(prep, signature=c.signers[3].sign(b"x" * 10))
    with pytest.raises(RemoteProtocolError):
        c.handle(backup, MessageReceived(sender=victim, msg=prep))
    # A request whose client signature was tampered with.
    bad = dataclasses.replace(req, request_id=2)
    with pytest.raises(RemoteProtocolError):
        c.handle(backup, MessageReceived(sender=primary, msg=bad))
    # The honest pre-prepare still works afterwards: nothing was changed by the rejects.
    c.handle(backup, MessageReceived(sender=primary, msg=pp))
    assert c.replica(1).status is ReplicaStatus.NORMAL


def test_equivocating_primary_is_caught_with_evidence() -> None:
    c = Cluster(4, ed25519=True)
    c.submit(0, request(c.client, 1))
    c.submit(0, request(c.client, 2))
    pp = next(m for s, d, m in c.queue if isinstance(m, PrePrepare))
    other_batch = pp.batch[:1] if len(pp.batch) > 1 else ()
    alt = sign(
        dataclasses.replace(pp, batch=other_batch, digest=batch_digest(other_batch)), c.signers[0]
    )
    backup = c.ids[1]
    c.handle(backup, MessageReceived(sender=c.ids[0], msg=pp))
    c.handle(backup, MessageReceived(sender=c.ids[0], msg=alt))
    assert len(c.evidence) == 1
    ev = c.evidence[0]
    assert ev.offender == c.ids[0]
    assert check_evidence(c.committee, c.verifier, ev.first, ev.second) == c.ids[0]
    # Reported once, not on every repeat.
    c.handle(backup, MessageReceived(sender=c.ids[0], msg=alt))
    assert len(c.evidence) == 1


def test_conflicting_commit_votes_are_evidence() -> None:
    c = Cluster(4)
    c.submit(0, request(c.client, 1))
    c.deliver_all()
    a = sign(CommitVote(view=0, seq=3, digest=b"\x01" * 32, sender=c.ids[2]), c.signers[2])
    b = sign(CommitVote(view=0, seq=3, digest=b"\x02" * 32, sender=c.ids[2]), c.signers[2])
    c.handle(c.ids[1], MessageReceived(sender=c.ids[2], msg=a))
    c.handle(c.ids[1], MessageReceived(sender=c.ids[2], msg=b))
    assert [e.offender for e in c.evidence] == [c.ids[2]]


def test_silent_primary_is_replaced_by_view_change() -> None:
    c = Cluster(4)
    primary = c.ids[0]
    c.crash(primary)
    c.submit(1, request(c.client, 1))
    c.deliver_all()
    assert not any(c.commits[x] for x in c.ids[1:])
    for node in c.ids[1:]:
        c.fire(node, TimerKey.REQUEST)
    c.deliver_all()
    for i in (1, 2, 3):
        assert c.replica(i).view == 1
        assert c.replica(i).status is ReplicaStatus.NORMAL
        assert [e.seq for e in c.commits[c.ids[i]]] == [1]


def test_view_change_keeps_prepared_entries() -> None:
    c = Cluster(4)
    c.submit(0, request(c.client, 1))
    # Deliver everything except commit votes: replicas prepare seq 1 but cannot commit it.
    while c.queue:
        src, dst, msg = c.queue.popleft()
        if not isinstance(msg, CommitVote):
            c.handle(dst, MessageReceived(sender=src, msg=msg))
    assert not any(c.commits.values())
    digest = c.replica(1)._slots[1].prepared.pre_prepare.digest  # type: ignore[union-attr]
    c.crash(c.ids[0])
    for node in c.ids[1:]:
        c.fire(node, TimerKey.REQUEST)
    c.deliver_all()
    for node in c.ids[1:]:
        assert c.committed_digests(node) == {1: digest}


def test_lagging_replica_catches_up_by_state_transfer() -> None:
    c = Cluster(4)
    lagger = c.ids[3]
    c.crash(lagger)
    for rid in range(1, 12):
        c.submit(rid % 3, request(c.client, rid))
        c.deliver_all()
    assert c.replica(0).stable.seq >= 8
    c.restart(lagger)  # never persisted anything beyond genesis: far behind
    c.tick(3)
    rep = c.replica(3)
    assert rep.executed_seq == c.replica(0).executed_seq
    assert rep.stable.seq == c.replica(0).stable.seq
    done = c.committed_digests(c.ids[0])
    assert all(done[s] == d for s, d in c.committed_digests(lagger).items())


def test_restart_from_durable_state_does_not_forget_votes() -> None:
    c = Cluster(4)
    for rid in (1, 2, 3):
        c.submit(0, request(c.client, rid))
        c.deliver_all()
    node = c.ids[2]
    before = c.replica(2).executed_seq
    earlier = c.committed_digests(node)
    seen = len(c.commits[node])
    c.crash(node)
    c.restart(node)
    assert c.replica(2).executed_seq == before
    # Entries above the stable checkpoint are re-executed and reported again, identically.
    for e in c.commits[node][seen:]:
        assert earlier[e.seq] == e.entry.digest
    # And the restarted replica keeps taking part.
    c.submit(1, request(c.client, 4))
    c.deliver_all()
    assert c.replica(2).executed_seq == c.replica(0).executed_seq > before


def test_first_event_must_be_restarted_and_errors_are_sticky() -> None:
    c = Cluster(4)
    rep = Replica(committee=c.committee, config=c.config, signer=c.signers[0], verifier=c.verifier)
    with pytest.raises(LocalProtocolError):
        rep.handle(ClientRequest(request=request(c.client, 1)), 0.0)
    assert rep.status is ReplicaStatus.ERROR
    with pytest.raises(LocalProtocolError):
        rep.handle(Restarted(durable=None), 0.0)


def test_non_member_messages_are_rejected() -> None:
    c = Cluster(4)
    outsider = c.client
    p = sign(Prepare(view=0, seq=1, digest=b"\x00" * 32, sender=outsider.node_id), outsider)
    with pytest.raises(RemoteProtocolError):
        c.handle(c.ids[1], MessageReceived(sender=outsider.node_id, msg=p))


def test_config_rejects_inconsistent_window() -> None:
    with pytest.raises(LocalProtocolError):
        PbftConfig(checkpoint_interval=4, window=6)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_committees_without_faults_to_tolerate_commit(n: int) -> None:
    # f = 0: with one validator the primary's own votes are every quorum (it once never
    # committed: nothing arrived to advance its slot, and it changed views forever).
    c = Cluster(n)
    for rid in range(1, 4):
        c.submit(0, request(c.client, rid))
        c.deliver_all()
    assert [c.replica(i).executed_seq for i in range(n)] == [3] * n
    assert all(c.replica(i).view == 0 for i in range(n))


def test_a_primary_declared_dead_is_replaced_before_any_request_times_out() -> None:
    c = Cluster(4)
    primary = c.replica(0).primary
    backups = [i for i in range(4) if c.ids[i] != primary]
    # A suspicion of a backup, or of the primary by itself, changes nothing.
    assert c.handle(c.ids[backups[0]], PrimarySuspected(node=c.ids[backups[1]])) == []
    assert c.handle(primary, PrimarySuspected(node=primary)) == []
    c.crash(primary)
    for i in backups:
        c.handle(c.ids[i], PrimarySuspected(node=primary))
    c.deliver_all()
    assert [c.replica(i).view for i in backups] == [1, 1, 1]
    assert all(c.replica(i).status is ReplicaStatus.NORMAL for i in backups)
    # The new primary commits what is submitted next, with no timeout on the way.
    c.submit(backups[0], request(c.client, 1))
    c.deliver_all()
    assert [c.replica(i).executed_seq for i in backups] == [1, 1, 1]
