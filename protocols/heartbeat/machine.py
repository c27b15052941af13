"""``Membership``: SWIM with Lifeguard, as ``handle(event, now) -> list[Effect]``.

One protocol period (``probe_interval * (awareness + 1)``): probe the next member of a shuffled
round robin (a member the transport just lost, or one whose phi crossed the threshold, goes
first) with a PING; if no ACK comes within the probe timeout, ask ``indirect_checks`` random
members to PING it for us (PING_REQ; each answers ACK or, on its own timeout, NACK); if the
period ends in silence, accuse the target (``Suspect``, signed by us). A suspect has until the
Lifeguard suspicion timeout (shrinking as others confirm) to refute with a higher incarnation;
then it is declared ``Dead``. Every packet piggybacks queued updates (news about its receiver
first), and a gossip round every ``gossip_interval`` sends them to a few more members while any
are queued. Missed nacks and refutations raise our local-health score, which stretches our own
timeouts (Lifeguard's awareness).

Daemon additions (off in memberlist's constructors): the ring successor may take every period,
with the round robin in a second probe lane (``ring_probe_every`` 1); the accuser pings its
suspect halfway through the suspicion and any other member pings it once more before its own
timer declares it dead (``final_ping``); a death is gossiped at once and leads the piggyback
(``eager_dead``).

Nothing here reads a clock or global randomness: ``now`` comes with each event and ``rng`` is the
caller's seeded ``random.Random``.

The machine is assembled from parts, each a mixin over :class:`.core.MachineCore` (the shared
state and helpers): :mod:`.probing` and :mod:`.targets` (the failure detector),
:mod:`.dissemination` (piggyback, gossip, applying updates) and :mod:`.sync` (push-pull
anti-entropy). This module is the entry point: it routes each event, timer and packet kind to
its part through tables, and answers the views (``members``, ``status_of``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import HeartbeatConfig
from .core import MAX_SMALL_MAPS, Rng
from .dissemination import Dissemination
from .errors import LocalProtocolError
from .events import (
    Effect,
    Event,
    LocalStateChanged,
    MessageReceived,
    PeerDisconnected,
    PeerDiscovered,
    Send,
    Started,
    TaskOutcome,
    TimerFired,
    TimerKind,
)
from .messages import NodeState, Packet, PacketKind
from .probing import Probing
from .signing import Signer, Verifier
from .state import MemberStatus
from .sync import AntiEntropy
from .table import MemberBase

__all__ = ["MemberView", "Membership", "Rng"]

_ALIVE, _SUSPECT, _DEAD = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD

#: A timer kind's handler: ``(machine, the timer's arg, now, out)``.
_Handler = Callable[[Any, Any, float, list[Effect]], None]


@dataclass(frozen=True, slots=True)
class MemberView:
    """One row of ``members``: what this node believes about a member."""

    node: bytes
    status: MemberStatus
    incarnation: int
    state: NodeState
    since: float
    last_heard: float | None
    phi: float
    reliability: float
    is_self: bool = False


class Membership(Probing, AntiEntropy, Dissemination):
    """One member's view of the swarm: ``handle(event, now) -> list[Effect]``."""

    def __init__(
        self,
        *,
        signer: Signer,
        verifier: Verifier,
        config: HeartbeatConfig,
        rng: Rng,
        incarnation: int,
        state: NodeState,
        base: MemberBase | None = None,
    ) -> None:
        super().__init__(
            signer=signer,
            verifier=verifier,
            config=config,
            rng=rng,
            incarnation=incarnation,
            state=state,
            base=base,
        )
        self._init_dissemination()
        self._init_probing()
        self._init_sync()
        self._on_event: dict[type[Event], Callable[[Any, float, list[Effect]], None]] = {
            MessageReceived: self._on_message,
            TimerFired: self._on_timer_fired,
            Started: self._on_start,
            PeerDiscovered: lambda e, now, out: self._on_discovered(e.node, now, out),
            PeerDisconnected: lambda e, now, out: self._on_disconnected(e.node, now, out),
            LocalStateChanged: lambda e, now, out: self._on_local_state(e.state, now, out),
            TaskOutcome: self._on_task_outcome,
        }

    # -- entry point ---------------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Effect]:
        out: list[Effect] = []
        handler = self._on_event.get(type(event))
        if handler is None:
            raise LocalProtocolError(f"unknown event {event!r}")
        handler(event, now, out)
        return out

    def _on_message(self, event: MessageReceived, now: float, out: list[Effect]) -> None:
        if type(event.msg) is not Packet:
            raise LocalProtocolError("MessageReceived needs a heartbeat Packet")
        self._on_packet(event.sender, event.msg, now, out)

    def _on_timer_fired(self, event: TimerFired, now: float, out: list[Effect]) -> None:
        key = event.key
        if self._gens.get(key) == event.generation:
            del self._gens[key]
            # Only keys we set carry a current generation: (TimerKind, arg), see _timer.
            kind, arg = key  # type: ignore[misc]
            _ON_TIMER[kind](self, arg, now, out)

    def _on_task_outcome(self, event: TaskOutcome, now: float, out: list[Effect]) -> None:
        if event.node in self.reliability or self.table.get(event.node) is not None:
            self._rel(event.node, now).task_outcome(event.success)

    def _on_start(self, event: Started, now: float, out: list[Effect]) -> None:
        cfg, rng = self.cfg, self._rng
        if event.state is not None:
            self.state = event.state
            self.self_alive = self._sign_alive()
        if event.announce:
            self._queue(self.self_alive)
        # Random phases: members started together must not probe in lock step.
        out.append(self._timer(TimerKind.PROBE, None, now + rng.uniform(0, cfg.probe_interval)))
        self._gossip_at = now + rng.uniform(0, cfg.gossip_interval)
        out.append(self._timer(TimerKind.GOSSIP, None, self._gossip_at))
        at = now + cfg.reconnect_interval * rng.uniform(0.5, 1.5)
        out.append(self._timer(TimerKind.RECONNECT, None, at))
        if cfg.push_pull_interval > 0:
            at = now + cfg.push_pull_interval * rng.uniform(0.5, 1.5)
            if event.announce:
                # A joiner's page may be lost or go to a member that is gone: a digest exchange
                # a few periods later (about 1 KiB when the page did arrive) repairs the rest.
                at = now + min(cfg.push_pull_interval, 3 * cfg.probe_interval * rng.uniform(1, 2))
            self._push_pull_at = at
            out.append(self._timer(TimerKind.PUSH_PULL, None, at))
        if event.announce:
            self._sync_with_random(now, out, full=True)

    # -- packets -------------------------------------------------------------------------------

    def _on_packet(self, sender: bytes, p: Packet, now: float, out: list[Effect]) -> None:
        """What every packet carries (updates, the header's view of us), then its own kind's
        handler (``_ON_PACKET``), then whatever the sender should hear back from us."""
        if p.sender != sender:
            self.counters["forged"] += 1  # claims to be someone the transport did not see
            return
        if sender == self.me:
            return
        self._heard(sender, now)
        updates = p.updates
        if p.kind is PacketKind.NACK and updates:
            updates = self._witnesses(sender, p)
        for u in updates:
            self._apply(u, now, out)
        # Lifeguard's buddy system: the sender thinks we are suspect or dead; refute now.
        if p.ystatus in (_SUSPECT, _DEAD) and p.yinc >= self.incarnation:
            self._refute(p.yinc, awareness=False)
            self._declared_dead |= p.ystatus == _DEAD
        if self._declared_dead:
            # Others declared us dead: we were cut off (or stalled), so our view has drifted.
            self._declared_dead = False
            self._sync_soon(now, out)
        push_mine = p.yinc < self.incarnation
        kind = p.kind
        handler = _ON_PACKET.get(kind)
        if handler is not None:
            handler(self, sender, p, now, out)
        # A PING's ACK already led with our record; a SYNC's answer is a page that holds it.
        if kind is PacketKind.PING or kind is PacketKind.SYNC:
            push_mine = False
        if push_mine and self._pushed.get(sender) != self.incarnation:
            if len(self._pushed) >= MAX_SMALL_MAPS:
                self._pushed.clear()
            self._pushed[sender] = self.incarnation
            pk = self._packet(PacketKind.GOSSIP, sender, first=(self.self_alive,))
            out.append(Send(to=sender, msg=pk))
        # A member we hold dead is talking to us: our next packet's header tells it (buddy).
        m = self.table.get(sender)
        if (
            m is not None
            and m.status == _DEAD
            and kind is not PacketKind.PING
            and self._pushed.get(b"dead:" + sender) != m.incarnation
        ):
            self._pushed[b"dead:" + sender] = m.incarnation
            out.append(Send(to=sender, msg=self._packet(PacketKind.GOSSIP, sender)))

    # -- views ---------------------------------------------------------------------------------

    def members(self, now: float) -> list[MemberView]:
        """Every member we hold, ourselves first (O(members): for IPC, not for the hot path)."""
        hl = self.cfg.reliability_half_life
        rows = [
            MemberView(
                node=self.me,
                status=_ALIVE,
                incarnation=self.incarnation,
                state=self.state,
                since=0.0,
                last_heard=now,
                phi=0.0,
                reliability=1.0,
                is_self=True,
            )
        ]
        for m in self.table:
            d = self._phi.get(m.node)
            r = self.reliability.get(m.node)
            rows.append(
                MemberView(
                    node=m.node,
                    status=m.status,
                    incarnation=m.incarnation,
                    state=m.alive.state,
                    since=m.since,
                    last_heard=None if d is None else d.last,
                    phi=0.0 if d is None else round(d.phi(now), 3),
                    reliability=1.0 if r is None else round(r.score(now, hl), 4),
                )
            )
        return rows

    def status_of(self, node: bytes) -> MemberStatus | None:
        m = self.table.get(node)
        return None if m is None else m.status


#: Every timer kind's handler: ``(machine, the timer's arg, now, out)``.
_ON_TIMER: dict[TimerKind, _Handler] = {
    TimerKind.PROBE: Membership._on_probe_timer,
    TimerKind.ROUND_ROBIN: Membership._on_round_robin_timer,
    TimerKind.RESEND: Membership._on_resend_timer,
    TimerKind.ACK: Membership._on_ack_timer,
    TimerKind.INDIRECT: Membership._on_indirect_timer,
    TimerKind.RELAY: Membership._on_relay_timer,
    TimerKind.SUSPICION: Membership._on_suspicion_timer,
    TimerKind.FINAL: Membership._on_final_timer,
    TimerKind.GOSSIP: Membership._on_gossip_timer,
    TimerKind.RECONNECT: Membership._on_reconnect_timer,
    TimerKind.STATE: Membership._on_state_timer,
    TimerKind.PUSH_PULL: Membership._on_push_pull_timer,
}
if set(_ON_TIMER) != set(TimerKind):  # pragma: no cover - a new kind without a handler
    raise LocalProtocolError("every TimerKind needs a handler in _ON_TIMER")

#: Each packet kind's own handler, after the updates it carries were applied (GOSSIP has
#: nothing more to do): ``(machine, sender, packet, now, out)``.
_ON_PACKET: dict[PacketKind, Callable[[Any, bytes, Packet, float, list[Effect]], None]] = {
    PacketKind.PING: Membership._on_ping,
    PacketKind.ACK: Membership._on_ack,
    PacketKind.PING_REQ: Membership._on_ping_req,
    PacketKind.NACK: Membership._on_nack,
    PacketKind.SYNC: Membership._on_sync,
    PacketKind.SYNC_ACK: Membership._on_sync,
    PacketKind.SYNC_PAGE: Membership._on_sync,
}
