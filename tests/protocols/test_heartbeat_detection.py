"""Faster detection without false deaths, in the membership machine with no network.

* with ``ring_probe_every`` 1 every period probes the ring successor, and the round robin has a
  probe of its own every ``round_robin_every`` periods: two probes may be open at once, each
  matched by its sequence number;
* ``final_ping``: a member whose own suspicion timer runs out pings the suspect first, so a
  member that missed the refutation gets it in the ACK; silence declares the suspect dead;
* the accuser pings its suspect halfway through the suspicion instead, and then declares it
  dead at once;
* ``eager_dead``: a death brings the next gossip round forward and leads the piggyback;
* the daemon sends each update 12 times whatever N.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from p2pnode_protocols.heartbeat import (
    Alive,
    ChangeKind,
    Dead,
    HeartbeatConfig,
    LocalProtocolError,
    MemberChanged,
    MemberStatus,
    MessageReceived,
    Packet,
    PacketKind,
    Suspect,
    TimerFired,
)
from p2pnode_protocols.heartbeat.broadcast_queue import BroadcastQueue
from p2pnode_protocols.heartbeat.events import TimerKind
from p2pnode_protocols.heartbeat.table import ring_position
from tests.protocols.test_heartbeat import accuse, alive
from tests.protocols.test_heartbeat_antientropy import CFG, Pair

FAST = replace(CFG, final_ping=True, eager_dead=True)


def ack(sender: bytes, seq: int, *updates: Alive) -> MessageReceived:
    pk = Packet(kind=PacketKind.ACK, sender=sender, seq=seq, target=sender, updates=updates)
    return MessageReceived(sender=sender, msg=pk)


def gossip_from(sender: bytes, *updates: object) -> MessageReceived:
    pk = Packet(kind=PacketKind.GOSSIP, sender=sender, updates=updates)  # type: ignore[arg-type]
    return MessageReceived(sender=sender, msg=pk)


# -- the ring every period, the round robin in its own lane -------------------------------------


def test_the_ring_takes_every_period_and_the_round_robin_has_its_own_probe() -> None:
    cfg = replace(CFG, ring_probe_every=1, round_robin_every=2)
    pair = Pair(30, cfg)
    a = pair.m[0]
    ring = [x for _, x in sorted((ring_position(x), x) for x in pair.ids)]
    succ = ring[(ring.index(a.me) + 1) % len(ring)]
    now, rr_targets = 1.0, []
    for period in range(1, 7):
        (ping,) = pair.fire(0, TimerKind.PROBE, now)
        assert ping.to == succ  # every period
        due = TimerKind.ROUND_ROBIN in pair.timers[0]
        assert due == (period % 2 == 0)
        if due:
            t = pair.timers[0][TimerKind.ROUND_ROBIN].at
            assert t == pytest.approx(now + cfg.probe_interval / 2)
            (rr,) = pair.fire(0, TimerKind.ROUND_ROBIN, t)
            rr_targets.append(rr.to)
            assert rr.to != succ and len(a._open) == 2  # two probes open at once
            # Each ACK closes its own probe only.
            a.handle(ack(rr.to, rr.msg.seq), t + 0.01)
            assert len(a._open) == 1
        a.handle(ack(succ, ping.msg.seq), now + 0.6)
        assert not a._open
        now += cfg.probe_interval
    assert len(set(rr_targets)) == len(rr_targets) == 3  # the round robin moves on
    assert a.counters["probes_failed"] == 0


def test_detection_bound_with_the_ring_every_period() -> None:
    cfg = HeartbeatConfig(
        probe_interval=1.0,
        probe_timeout=0.4,
        suspicion_mult=0.6,
        suspicion_max_timeout_mult=2.0,
        ring_probe_every=1,
        round_robin_every=4,
    )
    assert cfg.detection_bound(8) == pytest.approx((7 * 4 + 0.5) + 1 + 1.2 + 1)
    assert replace(cfg, final_ping=True).detection_bound(8) == pytest.approx(
        cfg.detection_bound(8) + 0.4
    )


# -- the final check before a death from one's own timer -----------------------------------------


def suspected_by_gossip(pair: Pair) -> tuple[float, int]:
    """a hears (from a third member) that b is suspect; returns when a's suspicion runs out."""
    a, b = pair.m
    accuser = pair.ids[5]
    pair.absorb(0, a.handle(gossip_from(accuser, accuse(Suspect, b.me, 0, accuser)), 1.0))
    assert a.status_of(b.me) is MemberStatus.SUSPECT
    return pair.timers[0][TimerKind.SUSPICION].at, 0


def test_a_suspect_that_answers_the_final_ping_is_not_declared_dead() -> None:
    pair = Pair(10, FAST)
    a, b = pair.m
    at, _ = suspected_by_gossip(pair)
    sends = pair.fire(0, TimerKind.SUSPICION, at)
    # No death yet: a ping to the suspect, whose header says we hold it suspect.
    (ping,) = [s for s in sends if s.to == b.me]
    assert ping.msg.kind is PacketKind.PING and ping.msg.ystatus == MemberStatus.SUSPECT
    assert a.status_of(b.me) is MemberStatus.SUSPECT and a.counters["final_checks"] == 1
    # b never heard the accusation: the ping's header makes it refute, and its ACK carries
    # the new record.
    (answer,) = pair.deliver(ping, at + 0.01)
    assert b.incarnation == 1 and answer.msg.kind is PacketKind.ACK
    pair.deliver(answer, at + 0.02)
    assert a.status_of(b.me) is MemberStatus.ALIVE and a.counters["final_answers"] == 1
    # The check's timer, if it fires at all, changes nothing.
    t = pair.timers[0].pop(TimerKind.FINAL)
    out = a.handle(TimerFired(key=t.key, generation=t.generation), t.at)
    assert not [e for e in out if isinstance(e, MemberChanged)]
    assert a.status_of(b.me) is MemberStatus.ALIVE


def test_a_silent_suspect_is_pinged_twice_then_declared_dead() -> None:
    pair = Pair(10, FAST)
    a, b = pair.m
    at, _ = suspected_by_gossip(pair)
    (first,) = [s for s in pair.fire(0, TimerKind.SUSPICION, at) if s.to == b.me]
    half = pair.timers[0][TimerKind.FINAL].at
    assert half == pytest.approx(at + FAST.probe_timeout / 2)
    (again,) = [s for s in pair.fire(0, TimerKind.FINAL, half) if s.to == b.me]
    assert again.msg.kind is PacketKind.PING and again.msg.seq == first.msg.seq
    assert a.status_of(b.me) is MemberStatus.SUSPECT
    end = pair.timers[0][TimerKind.FINAL].at
    assert end == pytest.approx(at + FAST.probe_timeout)
    t = pair.timers[0].pop(TimerKind.FINAL)
    out = a.handle(TimerFired(key=t.key, generation=t.generation), end)
    deaths = [e for e in out if isinstance(e, MemberChanged) and e.kind is ChangeKind.DEAD]
    assert [e.node for e in deaths] == [b.me] and a.status_of(b.me) is MemberStatus.DEAD


def test_the_accuser_pings_halfway_through_and_then_declares_without_a_check() -> None:
    pair = Pair(2, FAST)
    a, b = pair.m
    pair.fire(0, TimerKind.PROBE, 1.0)
    pair.fire(0, TimerKind.RESEND, 1.2)  # lost
    pair.fire(0, TimerKind.ACK, 1.4)  # lost too
    pair.fire(0, TimerKind.INDIRECT, 2.0)  # the direct Suspect is lost as well
    assert a.status_of(b.me) is MemberStatus.SUSPECT
    lo, _ = FAST.suspicion_bounds(2)
    mid = pair.timers[0][TimerKind.FINAL].at
    assert mid == pytest.approx(2.0 + lo / 2)
    (ping,) = [s for s in pair.fire(0, TimerKind.FINAL, mid) if s.to == b.me]
    assert ping.msg.kind is PacketKind.PING
    assert a.counters["mid_suspicion_pings"] == 1
    # Lost too: at the end of its suspicion the accuser declares b dead at once.
    t = pair.timers[0].pop(TimerKind.SUSPICION)
    a.handle(TimerFired(key=t.key, generation=t.generation), t.at)
    assert a.status_of(b.me) is MemberStatus.DEAD and a.counters["final_checks"] == 0


def test_the_accusers_halfway_ping_brings_the_refutation_back() -> None:
    pair = Pair(2, FAST)
    a, b = pair.m
    pair.fire(0, TimerKind.PROBE, 1.0)
    pair.fire(0, TimerKind.RESEND, 1.2)
    pair.fire(0, TimerKind.ACK, 1.4)
    pair.fire(0, TimerKind.INDIRECT, 2.0)
    mid = pair.timers[0][TimerKind.FINAL].at
    (ping,) = [s for s in pair.fire(0, TimerKind.FINAL, mid) if s.to == b.me]
    for s in pair.deliver(ping, mid + 0.01):
        pair.deliver(s, mid + 0.02)
    assert a.status_of(b.me) is MemberStatus.ALIVE and b.incarnation == 1


# -- deaths spread first ------------------------------------------------------------------------


def test_a_death_brings_the_next_gossip_round_forward_and_leads_the_piggyback() -> None:
    pair = Pair(20, FAST)
    a = pair.m[0]
    pair.fire(0, TimerKind.GOSSIP, 1.0)  # a round at 1.0; the next is due at 1.2
    assert pair.timers[0][TimerKind.GOSSIP].at == pytest.approx(1.0 + FAST.gossip_interval)
    x, y, z = pair.ids[4], pair.ids[5], pair.ids[6]
    pair.absorb(0, a.handle(gossip_from(y, alive(y, 1)), 1.02))
    pair.absorb(0, a.handle(gossip_from(y, accuse(Dead, x, 0, y)), 1.03))
    # Not closer than half an interval to the last round.
    assert pair.timers[0][TimerKind.GOSSIP].at == pytest.approx(1.0 + FAST.gossip_interval / 2)
    sends = pair.fire(0, TimerKind.GOSSIP, 1.1)
    assert sends and all(type(s.msg.updates[0]) is Dead for s in sends)
    # A death more than half an interval after the last round: the round is now.
    pair.fire(0, TimerKind.GOSSIP, 4.8)
    pair.absorb(0, a.handle(gossip_from(y, accuse(Dead, z, 0, y)), 4.95))
    assert pair.timers[0][TimerKind.GOSSIP].at == 4.95


def test_urgent_items_lead_a_packet_after_news_about_its_receiver() -> None:
    q: BroadcastQueue[str] = BroadcastQueue()
    q.queue(b"a", "routine", 100)
    q.queue(b"b", "death", 100, urgent=True)
    q.queue(b"c", "about the receiver", 100)
    assert q.take(1000, 5, first=b"c".__eq__) == ["about the receiver", "death", "routine"]
    assert q.take(150, 5) == ["death"]  # room for one: the urgent one


# -- a fixed retransmit count -------------------------------------------------------------------


def test_the_daemon_sends_each_update_twelve_times_whatever_n() -> None:
    from p2pnode.membership.settings import heartbeat_config

    cfg = heartbeat_config()
    assert [cfg.retransmits(n) for n in (101, 1000, 10_000, 100_000)] == [12, 12, 12, 12]
    # ... and at least 8 in a small swarm (memberlist: 4 below 10 members).
    assert [cfg.retransmits(n) for n in (2, 8, 9, 10, 99)] == [8, 8, 8, 8, 8]
    assert HeartbeatConfig.lan().retransmits(8) == 4
    with pytest.raises(LocalProtocolError):
        replace(cfg, retransmit_scale_floor=4)
    assert cfg.final_ping and cfg.eager_dead and cfg.ring_probe_every == 1


# -- in the simulator: the shorter suspicion stays safe under loss ------------------------------


@pytest.mark.parametrize("seed", [1, 2])
def test_no_false_death_at_ten_percent_loss_with_the_daemon_defaults(seed: int) -> None:
    from p2pnode_simulations.heartbeat import HeartbeatWorld, Scenario

    sc = Scenario(seed=seed, n=150, loss=0.10, duration=20.0, crashes=3, recoveries=1)
    r = HeartbeatWorld(sc).run()
    assert r.false_deaths == 0, r.message
    assert r.ok and len(r.detection_all) == 3, r.message
