"""Heartbeat machines: memberlist's formula tables, Lifeguard pieces, the incarnation table, the
codec (whole, every prefix, trailing garbage, bounds) and the refusal of forged and replayed
records."""

from __future__ import annotations

import contextlib
import random

import pytest

from p2pnode_protocols.heartbeat import (
    Alive,
    Awareness,
    BroadcastQueue,
    Dead,
    HeartbeatConfig,
    KeyedHashVerifier,
    Membership,
    MemberStatus,
    MessageReceived,
    NodeState,
    Packet,
    PacketKind,
    RemoteProtocolError,
    Suspect,
    Suspicion,
    decode_packet,
    encode_packet,
    remaining_suspicion_time,
    retransmit_limit,
    suspicion_timeout,
)
from p2pnode_protocols.heartbeat.codec import accusation_payload, alive_payload
from p2pnode_protocols.heartbeat.state import TRANSITIONS, UpdateKind, transition

# -- memberlist's tables ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"),
    [(5, 1.0), (10, 1.0), (50, 1.698), (100, 2.0), (500, 2.698), (1000, 3.0)],
)
def test_suspicion_timeout_table(n: int, expected: float) -> None:
    # util_test.go: suspicionTimeout(3, n, time.Second) / 3
    assert suspicion_timeout(3, n, 1.0) / 3 == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(("n", "expected"), [(0, 0), (1, 3), (99, 6)])
def test_retransmit_limit_table(n: int, expected: int) -> None:
    assert retransmit_limit(3, n) == expected


@pytest.mark.parametrize(
    ("n", "k", "elapsed", "expected"),
    [
        (0, 3, 0, 30.0),
        (1, 3, 2, 14.0),
        (2, 3, 3, 4.81),
        (3, 3, 4, -2.0),
        (4, 3, 5, -3.0),
        (5, 3, 10, -8.0),
    ],
)
def test_remaining_suspicion_time_table(n: int, k: int, elapsed: float, expected: float) -> None:
    assert remaining_suspicion_time(n, k, elapsed, 2.0, 30.0) == pytest.approx(expected)


def test_awareness_table() -> None:
    cases = [
        (0, 0, 1),
        (-1, 0, 1),
        (-10, 0, 1),
        (1, 1, 2),
        (-1, 0, 1),
        (10, 7, 8),
        (-1, 6, 7),
        (-1, 5, 6),
        (-1, 4, 5),
        (-1, 3, 4),
        (-1, 2, 3),
        (-1, 1, 2),
        (-1, 0, 1),
        (-1, 0, 1),
    ]
    a = Awareness(8)
    for delta, score, timeout in cases:
        a.apply_delta(delta)
        assert a.score == score
        assert a.scale(1.0) == timeout


@pytest.mark.parametrize(
    ("confirmations", "expected_n", "expected"),
    [
        ([("me", False)], 0, 2.0),
        ([("me", False), ("foo", True)], 1, 1.25),
        ([("me", False), ("foo", True), ("foo", False), ("foo", False)], 1, 1.25),
        ([("me", False), ("foo", True), ("bar", True)], 2, 0.81),
        ([("me", False), ("foo", True), ("bar", True), ("baz", True)], 3, 0.5),
        ([("me", False), ("foo", True), ("bar", True), ("baz", True), ("zoo", False)], 3, 0.5),
    ],
)
def test_suspicion_confirmations(confirmations, expected_n, expected) -> None:  # type: ignore[no-untyped-def]
    # suspicion_test.go TestSuspicion_Timer: k=3, min 500 ms, max 2 s.
    s = Suspicion(accuser=b"me", incarnation=1, k=3, min_timeout=0.5, max_timeout=2.0, start=10.0)
    for who, new in confirmations:
        assert s.confirm(who.encode()) is new
    assert s.n == expected_n
    # memberlist's timer test allows scheduling fudge; the formula gives 0.811 for 0.81.
    assert s.deadline() == pytest.approx(10.0 + expected, abs=0.002)


def test_config_constructors_hold_memberlist_numbers() -> None:
    lan, wan, local = HeartbeatConfig.lan(), HeartbeatConfig.wan(), HeartbeatConfig.local()
    assert (lan.probe_interval, lan.probe_timeout, lan.suspicion_mult, lan.gossip_nodes) == (
        1.0,
        0.5,
        4,
        3,
    )
    assert (wan.probe_interval, wan.probe_timeout, wan.suspicion_mult, wan.gossip_nodes) == (
        5.0,
        3.0,
        6,
        4,
    )
    assert (local.probe_timeout, local.indirect_checks, local.retransmit_mult) == (0.2, 1, 2)
    assert lan.expected_confirmations(100) == 2 and lan.expected_confirmations(3) == 0


def test_broadcast_queue_invalidates_and_limits() -> None:
    q: BroadcastQueue[str] = BroadcastQueue()
    q.queue(b"a", "a1", 10)
    q.queue(b"b", "b1", 10)
    q.queue(b"a", "a2", 10)  # replaces a1
    assert len(q) == 2
    assert q.take(100, 2) == ["a2", "b1"]  # newest first among equals
    assert q.take(15, 2) == ["a2"]  # only one fits
    assert q.take(100, 2) == ["b1"]  # a2 reached its limit
    assert len(q) == 0


# -- incarnation table -------------------------------------------------------------------------


def test_every_pair_is_in_the_table() -> None:
    for status in (None, *MemberStatus):
        for kind in UpdateKind:
            assert (status, kind) in TRANSITIONS


def test_transition_rules() -> None:
    A, S, D = MemberStatus
    assert transition(A, 3, UpdateKind.ALIVE, 3) is None
    assert transition(A, 3, UpdateKind.ALIVE, 4) is A
    assert transition(A, 3, UpdateKind.SUSPECT, 3) is S
    assert transition(A, 3, UpdateKind.SUSPECT, 2) is None
    assert transition(D, 3, UpdateKind.ALIVE, 3) is None
    assert transition(D, 3, UpdateKind.ALIVE, 4) is A
    assert transition(None, -1, UpdateKind.DEAD, 9) is None


# -- codec -------------------------------------------------------------------------------------

V = KeyedHashVerifier(b"k" * 64)
STATE = NodeState(
    addrs=("/ip4/127.0.0.1/tcp/1",),
    version="0.1",
    cpu_cores=2,
    memory_mb=1024,
    gpu="",
    bandwidth_mbps=100.0,
    tasks_running=1,
    free_slots=1,
    models=("m@1",),
)


def alive(node: bytes, inc: int, state: NodeState = STATE) -> Alive:
    sig = V.signer_for(node).sign(alive_payload(node, inc, state))
    return Alive(node=node, incarnation=inc, state=state, signature=sig)


def accuse(cls, node: bytes, inc: int, accuser: bytes):  # type: ignore[no-untyped-def]
    kind = "suspect" if cls is Suspect else "dead"
    sig = V.signer_for(accuser).sign(accusation_payload(kind, node, inc, accuser))
    return cls(node=node, incarnation=inc, accuser=accuser, signature=sig)


def sample_packet() -> Packet:
    return Packet(
        kind=PacketKind.PING,
        sender=b"a" * 38,
        seq=7,
        target=b"b" * 38,
        inc=3,
        yinc=2,
        ystatus=1,
        updates=(alive(b"c" * 38, 4), accuse(Dead, b"d" * 38, 1, b"a" * 38)),
    )


def test_codec_round_trip_whole() -> None:
    p = sample_packet()
    assert decode_packet(encode_packet(p), max_bytes=1400) == p


def test_codec_every_prefix_and_trailing_garbage_refused() -> None:
    data = encode_packet(sample_packet())
    for cut in range(len(data)):
        with pytest.raises(RemoteProtocolError):
            decode_packet(data[:cut], max_bytes=1400)
    with pytest.raises(RemoteProtocolError):
        decode_packet(data + b"\x00", max_bytes=1400)


def test_codec_refuses_oversized_and_unsigned() -> None:
    data = encode_packet(sample_packet())
    with pytest.raises(RemoteProtocolError) as e:
        decode_packet(data, max_bytes=len(data) - 1)
    assert e.value.reason == "oversized"
    unsigned = Packet(
        kind=PacketKind.GOSSIP,
        sender=b"a" * 38,
        updates=(Alive(node=b"c" * 38, incarnation=1, state=STATE, signature=b""),),
    )
    with pytest.raises(RemoteProtocolError) as e:
        decode_packet(encode_packet(unsigned), max_bytes=1400)
    assert e.value.reason == "unsigned"
    big = NodeState(
        models=tuple("x" * 80 for _ in range(16)), addrs=tuple("y" * 128 for _ in range(8))
    )
    with pytest.raises(RemoteProtocolError) as e:
        decode_packet(
            encode_packet(
                Packet(
                    kind=PacketKind.GOSSIP, sender=b"a" * 38, updates=(alive(b"c" * 38, 1, big),)
                )
            ),
            max_bytes=100_000,
        )
    assert e.value.reason == "oversized"


def test_random_bytes_never_crash_the_decoder() -> None:
    rng = random.Random(5)
    for _ in range(2000):
        with contextlib.suppress(RemoteProtocolError):
            decode_packet(rng.randbytes(rng.randrange(64)), max_bytes=1400)


# -- the machine refuses forged and replayed records -------------------------------------------


def machine(node: bytes = b"m" * 38) -> Membership:
    return Membership(
        signer=V.signer_for(node),
        verifier=V,
        config=HeartbeatConfig.lan(),
        rng=random.Random(1),
        incarnation=10,
        state=STATE,
    )


def gossip(sender: bytes, *updates) -> MessageReceived:  # type: ignore[no-untyped-def]
    return MessageReceived(
        sender=sender, msg=Packet(kind=PacketKind.GOSSIP, sender=sender, inc=1, updates=updates)
    )


def test_forged_and_replayed_records_are_refused_and_counted() -> None:
    m = machine()
    x, y = b"x" * 38, b"y" * 38
    m.handle(gossip(x, alive(x, 5)), 0.0)
    assert m.status_of(x) is MemberStatus.ALIVE
    # Forged: y's record signed with x's key.
    forged = Alive(
        node=y,
        incarnation=1,
        state=STATE,
        signature=V.signer_for(x).sign(alive_payload(y, 1, STATE)),
    )
    m.handle(gossip(x, forged), 1.0)
    assert m.status_of(y) is None and m.counters["forged"] == 1
    # Forged accusation: a dead record "by y" signed by x.
    bad = Dead(node=x, incarnation=5, accuser=y, signature=accuse(Dead, x, 5, x).signature)
    m.handle(gossip(x, bad), 1.0)
    assert m.status_of(x) is MemberStatus.ALIVE and m.counters["forged"] == 2
    # Replayed: x moves to incarnation 6, then its old record comes again.
    m.handle(gossip(x, alive(x, 6)), 2.0)
    m.handle(gossip(x, alive(x, 5)), 3.0)
    assert m.table.get(x).incarnation == 6 and m.counters["stale"] == 1  # type: ignore[union-attr]
    # A packet claiming another sender than the authenticated one.
    m.handle(MessageReceived(sender=y, msg=Packet(kind=PacketKind.PING, sender=x)), 4.0)
    assert m.counters["forged"] == 3


def test_too_frequent_state_changes_are_refused() -> None:
    m = machine()
    x = b"x" * 38
    for inc in range(1, 30):
        m.handle(gossip(x, alive(x, inc)), 0.0)
    assert m.counters["too_frequent"] > 0
    assert m.table.get(x).incarnation < 29  # type: ignore[union-attr]


def test_accusation_about_ourselves_is_refuted() -> None:
    m = machine()
    me, x = m.me, b"x" * 38
    m.handle(gossip(x, alive(x, 1)), 0.0)
    m.handle(gossip(x, accuse(Suspect, me, 10, x)), 1.0)
    assert m.incarnation == 11 and m.counters["refutes"] == 1
    assert m.queue.get(me) == m.self_alive
