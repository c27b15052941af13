"""Cheap redundancy and anti-entropy in the membership machine, with no network.

* bucket digests track the table exactly (layered over a shared base or not), and travel in
  push-pull packets only;
* in-sync members exchange digests only, of a size that does not depend on N; a difference is
  repaired in both directions; a large divergence (a healed partition) gets a bounded page;
* a lost ping is sent again inside the probe timeout, so one lost packet is not a suspicion;
* the suspect is told directly and its refutation comes straight back to the accuser;
* the suspicion's log10 N factor is capped, and the simulator runs the daemon's own defaults.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode_protocols.heartbeat import (
    Dead,
    HeartbeatConfig,
    LocalProtocolError,
    MemberBase,
    Membership,
    MemberStatus,
    MessageReceived,
    Packet,
    PacketKind,
    RemoteProtocolError,
    Send,
    SetTimer,
    Started,
    Suspect,
    TimerFired,
    decode_packet,
    encode_packet,
    packet_size,
)
from p2pnode_protocols.heartbeat.events import TimerKind
from p2pnode_protocols.heartbeat.table import (
    Member,
    MemberTable,
    bucket_of,
    entry_hash,
    ring_position,
)
from tests.protocols.test_heartbeat import STATE, V, accuse, alive

CFG = HeartbeatConfig.lan(probe_interval=1.0, probe_timeout=0.4, suspicion_confirmations=0)


def nid(i: int) -> bytes:
    return b"\x00\x24\x08\x01\x12\x20" + i.to_bytes(4, "big") * 8


def from_scratch(table: MemberTable) -> list[int]:
    d = [0] * table.buckets
    for m in table:
        d[bucket_of(m.node, table.buckets)] ^= entry_hash(m.node, m.incarnation, m.status)
    return d


# -- digests ------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.integers(0, 40), st.integers(0, 5), st.sampled_from([0, 1, 2, -1])),
        max_size=60,
    ),
    buckets=st.sampled_from([1, 7, 64]),
)
def test_digests_track_the_table(ops: list[tuple[int, int, int]], buckets: int) -> None:
    ids = [nid(i) for i in range(41)]
    base = MemberBase([alive(x, 0) for x in ids[:20]], buckets=buckets)
    layered = MemberTable(ids[0], base, buckets=buckets)
    plain = MemberTable(ids[0], buckets=buckets)
    for x in ids[1:20]:
        plain.put(base.members[x])
    for i, inc, status in ops:
        x = ids[i]
        if x == ids[0]:
            continue
        for t in (layered, plain):
            if status < 0:
                t.remove(x)
            else:
                a = alive(x, inc)
                t.put(Member(x, MemberStatus(status), inc, a, 0.0, a, 0.0))
    assert layered.digests == plain.digests == from_scratch(plain)
    assert layered.counts == plain.counts
    for b in range(buckets):
        assert {m.node for m in layered.in_bucket(b)} == {m.node for m in plain.in_bucket(b)}


def test_codec_carries_a_digest_on_push_pull_only() -> None:
    p = Packet(kind=PacketKind.SYNC, sender=nid(1), digest=bytes(range(64)) * 8)
    data = encode_packet(p)
    assert decode_packet(data, max_bytes=1400) == p
    assert packet_size(p) >= len(data) - 4
    for cut in range(len(data)):
        with pytest.raises(RemoteProtocolError):
            decode_packet(data[:cut], max_bytes=1400)
    with pytest.raises(RemoteProtocolError):
        decode_packet(data + b"\x00", max_bytes=1400)
    ping = encode_packet(Packet(kind=PacketKind.PING, sender=nid(1)))
    # A digest glued onto a ping is refused; so is a digest that is not whole buckets.
    with pytest.raises(RemoteProtocolError):
        decode_packet(
            ping[:1] + bytes([ping[0] + 1]) + ping[1:] + b"\x48" + bytes(8), max_bytes=1400
        )
    bad = bytearray(encode_packet(replace(p, digest=bytes(8))))
    bad[-9] = 0x47  # byte string of 7 bytes
    with pytest.raises(RemoteProtocolError):
        decode_packet(bytes(bad[:-1]), max_bytes=1400)


# -- push-pull ----------------------------------------------------------------------------------


class Pair:
    """Two machines (a and b) over a shared base of n members, joined by a fake link."""

    def __init__(self, n: int, cfg: HeartbeatConfig = CFG) -> None:
        self.ids = [nid(i) for i in range(n)]
        self.base = MemberBase([alive(x, 0) for x in self.ids], buckets=cfg.sync_buckets)
        self.m = [
            Membership(
                signer=V.signer_for(x),
                verifier=V,
                config=cfg,
                rng=random.Random(i),
                incarnation=0,
                state=STATE,
                base=self.base,
            )
            for i, x in enumerate(self.ids[:2])
        ]
        self.timers: list[dict[TimerKind, SetTimer]] = [{}, {}]
        for i in (0, 1):
            self.absorb(i, self.m[i].handle(Started(announce=False), 0.0))

    def absorb(self, i: int, effects: list) -> list[Send]:  # type: ignore[type-arg]
        sends = []
        for e in effects:
            if isinstance(e, SetTimer):
                self.timers[i][e.key[0]] = e
            elif isinstance(e, Send):
                sends.append(e)
        return sends

    def fire(self, i: int, kind: TimerKind, now: float) -> list[Send]:
        t = self.timers[i].pop(kind)
        return self.absorb(i, self.m[i].handle(TimerFired(key=t.key, generation=t.generation), now))

    def deliver(self, send: Send, now: float) -> list[Send]:
        j = self.ids.index(send.to)
        ev = MessageReceived(sender=send.msg.sender, msg=send.msg)
        return self.absorb(j, self.m[j].handle(ev, now))

    def push_pull(self, now: float) -> list[Packet]:
        """a starts a push-pull with b; every packet that travels, in order."""
        a, b = self.m
        a._random_nodes = lambda k, exclude, now, **kw: [b.me]  # type: ignore[method-assign]
        sends = [s for s in self.fire(0, TimerKind.PUSH_PULL, now) if s.to == b.me]
        assert len(sends) == 1
        travelled = []
        while sends:
            s = sends.pop(0)
            travelled.append(s.msg)
            sends += [r for r in self.deliver(s, now) if r.msg.kind >= PacketKind.SYNC]
        return travelled


@pytest.mark.parametrize("n", [40, 2000])
def test_in_sync_members_exchange_digests_only(n: int) -> None:
    pair = Pair(n)
    travelled = pair.push_pull(1.0)
    assert [p.kind for p in travelled] == [PacketKind.SYNC, PacketKind.SYNC_ACK]
    assert all(not p.updates and len(p.digest) == 8 * CFG.sync_buckets for p in travelled)
    # Whatever N: two digests and two headers.
    assert sum(packet_size(p) for p in travelled) < 2 * (8 * CFG.sync_buckets + 120)


def test_push_pull_repairs_a_difference_both_ways() -> None:
    pair = Pair(300)
    a, b = pair.m
    x, y = pair.ids[5], pair.ids[6]
    # b heard x's new state; a heard y suspected.
    b.handle(
        MessageReceived(
            sender=x, msg=Packet(kind=PacketKind.GOSSIP, sender=x, updates=(alive(x, 3),))
        ),
        0.5,
    )
    a.handle(
        MessageReceived(
            sender=pair.ids[7],
            msg=Packet(
                kind=PacketKind.GOSSIP,
                sender=pair.ids[7],
                updates=(accuse(Suspect, y, 0, pair.ids[7]),),
            ),
        ),
        0.5,
    )
    travelled = pair.push_pull(1.0)
    assert [p.kind for p in travelled] == [
        PacketKind.SYNC,
        PacketKind.SYNC_ACK,
        PacketKind.SYNC_PAGE,
    ]
    assert a.table.get(x).incarnation == 3  # type: ignore[union-attr]
    assert b.status_of(y) is MemberStatus.SUSPECT
    assert a._digests() == b._digests()
    # Only the differing buckets' records travelled, well under a page.
    assert sum(len(p.updates) for p in travelled) <= 2 * (300 // CFG.sync_buckets + 8)


def test_a_large_divergence_gets_a_bounded_page() -> None:
    pair = Pair(400)
    b = pair.m[1]
    # b holds most members at a newer incarnation (say, after a healed partition).
    for x in pair.ids[2:]:
        u = alive(x, 1)
        b.table.put(Member(x, MemberStatus.ALIVE, 1, u, 0.0, u, 0.0))
    travelled = pair.push_pull(1.0)
    assert [p.kind for p in travelled] == [
        PacketKind.SYNC,
        PacketKind.SYNC_ACK,
        PacketKind.SYNC_PAGE,
    ]
    ack = travelled[1]
    assert len(ack.updates) > 20 and packet_size(ack) <= CFG.max_sync_bytes + 1024
    assert b.counters["sync_pages"] == 1


# -- cheap redundancy in probing ----------------------------------------------------------------


def test_a_lost_ping_is_sent_again_inside_the_probe_timeout() -> None:
    pair = Pair(2)
    a, b = pair.m
    first = pair.fire(0, TimerKind.PROBE, 1.0)
    assert [s.msg.kind for s in first] == [PacketKind.PING]
    resend = pair.timers[0][TimerKind.RESEND]
    assert resend.at == pytest.approx(1.0 + CFG.probe_timeout / 2)
    # The first ping is lost; the second gets through and is answered.
    again = pair.fire(0, TimerKind.RESEND, resend.at)
    assert [(s.to, s.msg.kind, s.msg.seq) for s in again] == [
        (b.me, PacketKind.PING, first[0].msg.seq)
    ]
    (ack,) = pair.deliver(again[0], resend.at + 0.01)
    pair.deliver(ack, resend.at + 0.02)
    # The period ends: no helpers, no suspicion.
    assert pair.fire(0, TimerKind.ACK, 1.0 + CFG.probe_timeout) == []
    pair.fire(0, TimerKind.INDIRECT, 2.0)
    assert a.status_of(b.me) is MemberStatus.ALIVE and a.counters["probes_failed"] == 0


def test_the_suspect_is_told_directly_and_refutes_in_one_round_trip() -> None:
    pair = Pair(2)
    a, b = pair.m
    pair.fire(0, TimerKind.PROBE, 1.0)
    pair.fire(0, TimerKind.RESEND, 1.2)  # lost
    pair.fire(0, TimerKind.ACK, 1.4)  # lost too
    told = pair.fire(0, TimerKind.INDIRECT, 2.0)
    assert a.status_of(b.me) is MemberStatus.SUSPECT
    direct = [s for s in told if s.to == b.me]
    assert direct and isinstance(direct[0].msg.updates[0], Suspect)
    back = pair.deliver(direct[0], 2.01)
    assert b.incarnation == 1
    for s in back:
        pair.deliver(s, 2.02)
    assert a.status_of(b.me) is MemberStatus.ALIVE and a.table.get(b.me).incarnation == 1  # type: ignore[union-attr]


# -- suspicion bounds and the daemon's defaults -------------------------------------------------


def test_suspicion_scale_cap() -> None:
    plain = HeartbeatConfig(suspicion_mult=1.0, suspicion_max_timeout_mult=2.0)
    capped = replace(plain, suspicion_scale_cap=1.0)
    assert plain.suspicion_bounds(10_000) == (4.0, 8.0)
    assert capped.suspicion_bounds(10_000) == (1.0, 2.0)
    assert capped.suspicion_bounds(5) == plain.suspicion_bounds(5) == (1.0, 2.0)
    assert replace(plain, suspicion_scale_cap=2.0).suspicion_bounds(1000) == (2.0, 4.0)
    with pytest.raises(LocalProtocolError):
        replace(plain, suspicion_scale_cap=0.5)


def test_the_simulator_runs_the_daemon_defaults() -> None:
    from p2pnode.config import SCHEMA
    from p2pnode.membership.settings import heartbeat_config
    from p2pnode_simulations.heartbeat import Scenario, daemon_config

    defaults = {s.key: s.default for s in SCHEMA}
    cfg = Scenario().config
    assert cfg == daemon_config() == heartbeat_config()
    for key in (
        "probe_interval",
        "probe_timeout",
        "suspicion_mult",
        "suspicion_scale_cap",
        "ring_probe_every",
        "retransmit_scale_cap",
        "suspicion_max_timeout_mult",
        "suspicion_confirmations",
        "push_pull_interval",
    ):
        assert getattr(cfg, key) == defaults[f"membership.{key}"], key


# -- helpers' witness statements ----------------------------------------------------------------


def nack_from(helper: bytes, seq: int, target: bytes, inc: int = 0) -> MessageReceived:
    w = accuse(Suspect, target, inc, helper)
    pk = Packet(kind=PacketKind.NACK, sender=helper, seq=seq, target=target, updates=(w,))
    return MessageReceived(sender=helper, msg=pk)


def failed_probe_with_helpers(n: int = 6) -> tuple[Pair, Membership, bytes, int, tuple[bytes, ...]]:
    pair = Pair(n)
    a = pair.m[0]
    (ping,) = pair.fire(0, TimerKind.PROBE, 1.0)
    target, seq = ping.to, ping.msg.seq
    pair.fire(0, TimerKind.RESEND, 1.2)
    reqs = pair.fire(0, TimerKind.ACK, 1.4)
    helpers = tuple(s.to for s in reqs if s.msg.kind is PacketKind.PING_REQ)
    assert len(helpers) == CFG.indirect_checks
    return pair, a, target, seq, helpers


def test_every_helper_nacking_with_a_witness_starts_the_suspicion_at_its_minimum() -> None:
    cfg = replace(CFG, suspicion_confirmations=3, suspicion_scale_cap=1.0)
    pair = Pair(8, cfg)
    a = pair.m[0]
    (ping,) = pair.fire(0, TimerKind.PROBE, 1.0)
    target, seq = ping.to, ping.msg.seq
    pair.fire(0, TimerKind.RESEND, 1.2)
    helpers = [s.to for s in pair.fire(0, TimerKind.ACK, 1.4) if s.msg.kind is PacketKind.PING_REQ]
    for h in helpers[:-1]:
        a.handle(nack_from(h, seq, target), 1.8)
        assert a.status_of(target) is MemberStatus.ALIVE  # witnesses wait for our verdict
    out = a.handle(nack_from(helpers[-1], seq, target), 1.8)
    # The last NACK ends the period early; three witnesses confirm our own suspicion.
    assert a.status_of(target) is MemberStatus.SUSPECT
    lo, _ = cfg.suspicion_bounds(8)
    (timer,) = [
        e for e in out if isinstance(e, SetTimer) and e.key == (TimerKind.SUSPICION, target)
    ][-1:]
    assert timer.at == pytest.approx(1.8 + lo)
    assert a.counters["confirmations"] == 3


def test_a_witness_is_never_applied_when_the_probe_succeeds() -> None:
    pair, a, target, seq, helpers = failed_probe_with_helpers()
    # The target answers late (within the period); then a helper's NACK with its witness.
    ack = Packet(kind=PacketKind.ACK, sender=target, seq=seq, target=target)
    a.handle(MessageReceived(sender=target, msg=ack), 1.6)
    a.handle(nack_from(helpers[0], seq, target), 1.7)
    assert a.status_of(target) is MemberStatus.ALIVE
    # A witness about another probe, or from a member that was not asked, is dropped too.
    a.handle(nack_from(helpers[1], seq + 99, target), 1.8)
    a.handle(nack_from(target, seq, pair.ids[5]), 1.8)
    assert a.status_of(target) is MemberStatus.ALIVE
    assert a.status_of(pair.ids[5]) is MemberStatus.ALIVE


def test_retransmit_scale_cap() -> None:
    plain = HeartbeatConfig(retransmit_mult=4)
    capped = replace(plain, retransmit_scale_cap=4)
    assert [plain.retransmits(n) for n in (8, 16, 1000, 10_000)] == [4, 8, 16, 20]
    assert [capped.retransmits(n) for n in (8, 16, 1000, 10_000, 10**6)] == [4, 8, 16, 16, 16]
    with pytest.raises(LocalProtocolError):
        replace(plain, retransmit_scale_cap=0)


def test_a_member_declared_dead_brings_its_next_digest_exchange_forward() -> None:
    pair = Pair(10)
    a = pair.m[0]
    before = pair.timers[0][TimerKind.PUSH_PULL].at
    assert before >= 0.5 * CFG.push_pull_interval
    x = pair.ids[4]
    pk = Packet(kind=PacketKind.GOSSIP, sender=x, updates=(accuse(Dead, a.me, 0, x),))
    pair.absorb(0, a.handle(MessageReceived(sender=x, msg=pk), 2.0))
    assert a.incarnation == 1
    soon = pair.timers[0][TimerKind.PUSH_PULL].at
    assert 2.0 + 3 * CFG.probe_interval <= soon <= 2.0 + 6 * CFG.probe_interval
    # A suspicion alone does not: only members that were cut off pay for an early exchange.
    b = pair.m[1]
    pk = Packet(kind=PacketKind.GOSSIP, sender=x, updates=(accuse(Suspect, b.me, 0, x),))
    pair.absorb(1, b.handle(MessageReceived(sender=x, msg=pk), 2.0))
    assert pair.timers[1][TimerKind.PUSH_PULL].at >= 0.5 * CFG.push_pull_interval


# -- the monitoring ring ------------------------------------------------------------------------


def test_every_other_probe_goes_to_the_ring_successor_and_skips_the_dead() -> None:
    cfg = replace(CFG, ring_probe_every=2)
    pair = Pair(30, cfg)
    a = pair.m[0]
    ring = sorted((ring_position(x), x) for x in pair.ids)
    at = [x for _, x in ring].index(a.me)
    succ = [ring[(at + k) % len(ring)][1] for k in range(1, 4)]
    targets = []
    now = 1.0

    def probe(now: float) -> bytes:
        # Each probe is answered at once (no one is accused), then the next one starts.
        sends = pair.fire(0, TimerKind.PROBE, now)
        ping = next(s for s in reversed(sends) if s.msg.kind is PacketKind.PING)
        pk = Packet(kind=PacketKind.ACK, sender=ping.to, seq=ping.msg.seq, target=ping.to)
        a.handle(MessageReceived(sender=ping.to, msg=pk), now + 0.01)
        return ping.to

    for _ in range(6):
        targets.append(probe(now))
        now += 1.0
    assert targets[1] == targets[3] == targets[5] == succ[0]
    # Our successor dies (in our view): its successor is probed instead.
    u = a.table.get(succ[0])
    a.table.put(replace(u, status=MemberStatus.DEAD))  # type: ignore[arg-type]
    probe(now)
    assert probe(now + 1.0) == succ[1]
    # A suspect successor is skipped too (it may have crashed with the one after it), but
    # it is still preferred to nobody.
    u = a.table.get(succ[1])
    a.table.put(replace(u, status=MemberStatus.SUSPECT))  # type: ignore[arg-type]
    assert a._ring_successor() == succ[2]
    for x in pair.ids[1:]:
        if x not in (succ[0], succ[1]):
            a.table.put(replace(a.table.get(x), status=MemberStatus.DEAD))  # type: ignore[arg-type]
    assert a._ring_successor() == succ[1]


def test_the_ring_is_shared_with_the_base_until_a_member_joins() -> None:
    pair = Pair(20)
    a = pair.m[0]
    assert a.table.ring() is pair.base.ring
    x = nid(99)
    pk = Packet(kind=PacketKind.GOSSIP, sender=x, updates=(alive(x, 1),))
    a.handle(MessageReceived(sender=x, msg=pk), 1.0)
    ring = a.table.ring()
    assert ring is not pair.base.ring and (ring_position(x), x) in ring
    assert ring == sorted(ring) and len(ring) == 21


def test_detection_bound_allows_for_the_ring_probes() -> None:
    plain = HeartbeatConfig(probe_interval=1.0, suspicion_mult=1.0, suspicion_max_timeout_mult=2.0)
    ring = replace(plain, ring_probe_every=2)
    assert plain.detection_bound(8) == 7 + 1 + 2 + 1
    assert ring.detection_bound(8) == 14 + 1 + 2 + 1
    with pytest.raises(LocalProtocolError):
        replace(plain, ring_probe_every=65)
    with pytest.raises(LocalProtocolError):
        replace(plain, ring_probe_every=1, round_robin_every=0)
