"""Stateful property test of the membership machine (STYLE.md §4): several ``Membership``
machines joined by a fake network whose messages hypothesis delivers, drops, duplicates and
reorders, with partitions, heals and crashes. Safety only (liveness is the simulator's job):

* a node's own incarnation never decreases, and nobody's view of a member's incarnation does;
* no live node records itself as suspect or dead;
* every member a live node knows of is one of the swarm's nodes (nothing is invented).
"""

from __future__ import annotations

import random

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from p2pnode.membership.settings import heartbeat_config
from p2pnode_protocols.heartbeat import (
    HeartbeatConfig,
    KeyedHashVerifier,
    Membership,
    MemberStatus,
    MessageReceived,
    NodeState,
    PeerDiscovered,
    Send,
    SetTimer,
    Started,
    TimerFired,
)

pytestmark = pytest.mark.timeout(110)

V = KeyedHashVerifier(b"s" * 64)
STATE = NodeState(
    addrs=("/ip4/127.0.0.1/tcp/1",),
    version="0.1",
    cpu_cores=2,
    memory_mb=1024,
    gpu="",
    bandwidth_mbps=100.0,
    tasks_running=0,
    free_slots=1,
    models=(),
)


class MembershipMachines(RuleBasedStateMachine):
    @initialize(n=st.integers(3, 5), seed=st.integers(0, 2**16), daemon=st.booleans())
    def start(self, n: int, seed: int, daemon: bool) -> None:
        self.now = 0.0
        self.ids = [bytes([65 + i]) * 38 for i in range(n)]
        self.nodes: dict[bytes, Membership] = {}
        self.timers: dict[bytes, dict[object, tuple[float, int]]] = {}
        self.inflight: list[tuple[bytes, bytes, object]] = []  # (sender, recipient, packet)
        self.crashed: set[bytes] = set()
        self.cut: set[frozenset[bytes]] = set()
        self.seen_inc: dict[tuple[bytes, bytes], int] = {}
        # memberlist's numbers, or the daemon's (ring every period with a second probe lane,
        # final pings, eager deaths).
        cfg = heartbeat_config() if daemon else HeartbeatConfig.local()
        for i, node in enumerate(self.ids):
            m = Membership(
                signer=V.signer_for(node),
                verifier=V,
                config=cfg,
                rng=random.Random(seed + i),
                incarnation=1,
                state=STATE,
            )
            self.nodes[node] = m
            self.timers[node] = {}
            self.apply(node, m.handle(Started(announce=True), self.now))
        for node in self.ids:
            for other in self.ids:
                if other != node:
                    self.apply(node, self.nodes[node].handle(PeerDiscovered(node=other), self.now))

    def apply(self, node: bytes, effects: list[object]) -> None:
        for e in effects:
            if isinstance(e, Send):
                if len(self.inflight) < 400:  # bound the model, as a real queue would
                    self.inflight.append((node, e.to, e.msg))
            elif isinstance(e, SetTimer):
                self.timers[node][e.key] = (e.at, e.generation)

    def live(self) -> list[bytes]:
        return [n for n in self.ids if n not in self.crashed]

    # -- the network ----------------------------------------------------------------------------

    @precondition(lambda self: self.inflight)
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.inflight) - 1))
        sender, to, packet = self.inflight.pop(i)
        if to in self.crashed or sender in self.crashed or frozenset((sender, to)) in self.cut:
            return
        event = MessageReceived(sender=sender, msg=packet)  # type: ignore[arg-type]
        self.apply(to, self.nodes[to].handle(event, self.now))

    @precondition(lambda self: self.inflight)
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        self.inflight.pop(data.draw(st.integers(0, len(self.inflight) - 1)))

    @precondition(lambda self: self.inflight)
    @rule(data=st.data())
    def duplicate(self, data: st.DataObject) -> None:
        self.inflight.append(self.inflight[data.draw(st.integers(0, len(self.inflight) - 1))])

    @rule()
    def settle(self) -> None:
        """Deliver everything in flight, in order (what a calm network does between ticks)."""
        for _ in range(len(self.inflight)):
            sender, to, packet = self.inflight.pop(0)
            if to in self.crashed or sender in self.crashed:
                continue
            if frozenset((sender, to)) in self.cut:
                continue
            event = MessageReceived(sender=sender, msg=packet)  # type: ignore[arg-type]
            self.apply(to, self.nodes[to].handle(event, self.now))

    @rule(dt=st.sampled_from([0.05, 0.3, 1.0, 3.0]))
    def tick(self, dt: float) -> None:
        """Let ``dt`` seconds pass: fire, in time order, every timer of a live node due by
        then (messages sent meanwhile wait for the network rules)."""
        target = self.now + dt
        for _ in range(500):  # bounded: periodic timers re-arm themselves
            due = [
                (at, node, key, gen)
                for node in self.live()
                for key, (at, gen) in self.timers[node].items()
                if at <= target
            ]
            if not due:
                break
            at, node, key, gen = min(due, key=lambda d: (d[0], d[1]))
            self.now = max(self.now, at)
            del self.timers[node][key]
            event = TimerFired(key=key, generation=gen)  # type: ignore[arg-type]
            self.apply(node, self.nodes[node].handle(event, self.now))
        self.now = max(self.now, target)

    @rule(a=st.integers(0, 4), b=st.integers(0, 4))
    def partition(self, a: int, b: int) -> None:
        x, y = self.ids[a % len(self.ids)], self.ids[b % len(self.ids)]
        if x != y:
            self.cut.add(frozenset((x, y)))

    @rule()
    def heal(self) -> None:
        self.cut.clear()

    @precondition(lambda self: len(self.crashed) < len(self.ids) - 2)
    @rule(i=st.integers(0, 4))
    def crash(self, i: int) -> None:
        self.crashed.add(self.ids[i % len(self.ids)])

    # -- safety ---------------------------------------------------------------------------------

    @invariant()
    def incarnations_never_decrease(self) -> None:
        for viewer in self.live():
            m = self.nodes[viewer]
            mine = self.seen_inc.get((viewer, viewer), 0)
            assert m.incarnation >= mine
            self.seen_inc[(viewer, viewer)] = m.incarnation
            for other in self.ids:
                member = m.table.get(other)
                if member is None or other == viewer:
                    continue
                before = self.seen_inc.get((viewer, other), 0)
                assert member.incarnation >= before, (viewer, other, member.incarnation, before)
                self.seen_inc[(viewer, other)] = member.incarnation

    @invariant()
    def no_live_node_suspects_or_buries_itself(self) -> None:
        for node in self.live():
            status = self.nodes[node].status_of(node)
            assert status in (None, MemberStatus.ALIVE), (node, status)

    @invariant()
    def nobody_is_invented(self) -> None:
        known = set(self.ids)
        for node in self.live():
            for other in self.nodes[node].table.ids:
                assert other in known


MembershipMachines.TestCase.settings = settings(
    max_examples=100, stateful_step_count=120, deadline=None
)
TestMembershipStateful = MembershipMachines.TestCase
