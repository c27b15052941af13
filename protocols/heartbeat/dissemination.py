"""Update dissemination: what we tell others and how we take what they tell us.

Every packet piggybacks queued updates (news about its receiver first), each sent
``retransmits(N)`` times; a gossip round every ``gossip_interval`` sends them to a few more
members while any are queued, and a death brings the next round forward (``eager_dead``).
Incoming updates are applied under the incarnation rules of :mod:`.state`: a newer alive record
clears a suspicion, an accusation at the current incarnation starts one (or confirms it, which
shortens it: Lifeguard), and an accusation about us is refuted with a higher incarnation. Our own
state changes are coalesced to one broadcast per ``min_state_interval``.
"""

from __future__ import annotations

import math

from .codec import PACKET_OVERHEAD, UPDATE_OVERHEAD, accusation_payload, alive_payload, update_size
from .core import MAX_SMALL_MAPS, MachineCore
from .events import ChangeKind, Effect, MemberChanged, Send, TimerKind
from .messages import Alive, Dead, NodeState, Packet, PacketKind, Suspect, Update
from .state import CONFIRM, MemberStatus, UpdateKind, transition
from .suspicion import Suspicion
from .table import Member

__all__ = ["Dissemination"]

_ALIVE, _SUSPECT, _DEAD = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD
_KIND = {Alive: UpdateKind.ALIVE, Suspect: UpdateKind.SUSPECT, Dead: UpdateKind.DEAD}


class Dissemination(MachineCore):
    """The piggyback queue, gossip rounds, our own state, and applying updates."""

    def _init_dissemination(self) -> None:
        self._retransmit_n = -1
        self._retransmit_limit = 0
        self._last_gossip = -math.inf
        self._gossip_at = math.inf
        #: Incarnation advances each member may still make now: (tokens, when counted).
        self._budget: dict[bytes, tuple[float, float]] = {}
        self._pending_state: NodeState | None = None
        self._last_state_sent = -math.inf

    # -- sending -------------------------------------------------------------------------------

    def _retransmits(self) -> int:
        # Called for every packet: the log10 is recomputed only when the live count moves.
        n = self.table.live + 1
        if n != self._retransmit_n:
            self._retransmit_n, self._retransmit_limit = n, self.cfg.retransmits(n)
        return self._retransmit_limit

    def _queue(self, u: Update) -> None:
        urgent = self.cfg.eager_dead and type(u) is Dead
        self.queue.queue(u.node, u, update_size(u), urgent=urgent)

    def _packet(
        self,
        kind: PacketKind,
        to: bytes,
        *,
        seq: int = 0,
        target: bytes = b"",
        first: tuple[Update, ...] = (),
    ) -> Packet:
        m = self.table.get(to)
        limit = self.cfg.max_packet_bytes - PACKET_OVERHEAD
        limit -= sum(update_size(u) + UPDATE_OVERHEAD for u in first)
        piggy = self.queue.take(
            limit, self._retransmits(), first=to.__eq__, per_item_overhead=UPDATE_OVERHEAD
        )
        if first:
            piggy = [u for u in piggy if u not in first]
        return Packet(
            kind=kind,
            sender=self.me,
            seq=seq,
            target=target,
            inc=self.incarnation,
            yinc=-1 if m is None else m.incarnation,
            ystatus=-1 if m is None else int(m.status),
            updates=first + tuple(piggy),
        )

    def _on_gossip_timer(self, arg: None, now: float, out: list[Effect]) -> None:
        cfg = self.cfg
        self._last_gossip = now
        if len(self.queue):
            for t in self._random_nodes(cfg.gossip_nodes, set(), now, dead_ok=True):
                pk = self._packet(PacketKind.GOSSIP, t)
                if pk.updates:
                    out.append(Send(to=t, msg=pk))
        self._gossip_at = now + cfg.gossip_interval
        out.append(self._timer(TimerKind.GOSSIP, None, self._gossip_at))

    def _gossip_soon(self, now: float, out: list[Effect]) -> None:
        """Bring the next gossip round forward to now, but never closer than half a gossip
        interval to the previous round (a burst of deaths costs at most twice the usual rate)."""
        at = max(now, self._last_gossip + self.cfg.gossip_interval / 2)
        if at < self._gossip_at:
            self._gossip_at = at
            out.append(self._timer(TimerKind.GOSSIP, None, at))

    # -- our own state -------------------------------------------------------------------------

    def _on_local_state(self, state: NodeState, now: float, out: list[Effect]) -> None:
        if state == (self._pending_state or self.state):
            return
        self._pending_state = state
        due = self._last_state_sent + self.cfg.min_state_interval
        if now >= due:
            self._publish_state(now)
        elif (TimerKind.STATE, None) not in self._gens:
            out.append(self._timer(TimerKind.STATE, None, due))

    def _on_state_timer(self, arg: None, now: float, out: list[Effect]) -> None:
        self._publish_state(now)

    def _publish_state(self, now: float) -> None:
        if self._pending_state is None:
            return
        self.state, self._pending_state = self._pending_state, None
        self.incarnation += 1
        self.self_alive = self._sign_alive()
        self._queue(self.self_alive)
        self._last_state_sent = now

    def _refute(self, accused_inc: int, *, awareness: bool = True) -> None:
        self.incarnation = max(self.incarnation, accused_inc) + 1
        self.self_alive = self._sign_alive()
        self._queue(self.self_alive)
        self.counters["refutes"] += 1
        if awareness:
            self.awareness.apply_delta(1)

    # -- receiving -----------------------------------------------------------------------------

    def _verify(self, u: Update) -> bool:
        if isinstance(u, Alive):
            return self._verifier.verify(
                u.node, alive_payload(u.node, u.incarnation, u.state), u.signature
            )
        kind = "suspect" if isinstance(u, Suspect) else "dead"
        payload = accusation_payload(kind, u.node, u.incarnation, u.accuser)
        return self._verifier.verify(u.accuser, payload, u.signature)

    def _rate_ok(self, node: bytes, now: float) -> bool:
        cfg = self.cfg
        tokens, last = self._budget.get(node, (float(cfg.alive_burst), now))
        tokens = min(float(cfg.alive_burst), tokens + (now - last) / cfg.min_state_interval)
        if tokens < 1.0:
            return False
        if len(self._budget) >= MAX_SMALL_MAPS:
            self._budget.clear()
        self._budget[node] = (tokens - 1.0, now)
        return True

    def _apply(self, u: Update, now: float, out: list[Effect], *, verified: bool = False) -> None:
        """Apply ``u`` if the incarnation rules (:func:`.state.transition`) take it and its
        signature holds (``verified``: we signed it ourselves)."""
        node = u.node
        kind = _KIND[type(u)]
        if node == self.me:
            self._about_me(u, kind, verified)
            return
        m = self.table.get(node)
        cur_inc = -1 if m is None else m.incarnation
        nxt = transition(None if m is None else m.status, cur_inc, kind, u.incarnation)
        if nxt is None:
            self.counters["stale" if u.incarnation < cur_inc else "duplicate"] += 1
            return
        if not verified and not self._verify(u):
            self.counters["forged"] += 1
            return
        if isinstance(u, Alive):
            self._apply_alive(u, m, now, out)
            return
        assert m is not None  # the table refuses accusations about unknown members
        if nxt == CONFIRM and u.incarnation == m.incarnation:
            s = self._suspicions.get(node)
            if s is not None and s.confirm(u.accuser):
                self.counters["confirmations"] += 1
                out.append(self._timer(TimerKind.SUSPICION, node, max(now, s.deadline())))
                self._queue(u)
        elif nxt in (CONFIRM, _SUSPECT):
            self._apply_suspect(u, m, now, out)
        else:
            self._apply_dead(u, m, now, out)

    def _apply_alive(self, u: Alive, m: Member | None, now: float, out: list[Effect]) -> None:
        """A newer alive record: a join, a recovery, a state change, or a refutation."""
        node = u.node
        if m is None and len(self.table) >= self.cfg.max_members:
            self.counters["over_capacity"] += 1
            return
        if m is not None and not self._rate_ok(node, now):
            self.counters["too_frequent"] += 1
            return
        since = now if m is None or m.status != _ALIVE else m.since
        self.table.put(Member(node, _ALIVE, u.incarnation, u, since, u, now))
        self._suspicions.pop(node, None)
        self._gens.pop((TimerKind.SUSPICION, node), None)
        self._dead_since.pop(node, None)
        self._queue(u)
        change: ChangeKind | None
        if m is None:
            change = ChangeKind.JOIN
            if not self._synced:
                self._synced = True
                out.append(Send(to=node, msg=self._sync_packet(PacketKind.SYNC, node)))
        elif m.status != _ALIVE:
            change = ChangeKind.RECOVERED
            self._rel(node, now).status(now, True, self.cfg.reliability_half_life)
        elif m.alive.state != u.state:
            change = ChangeKind.STATE
        else:
            change = None
        if change is not None:
            out.append(
                MemberChanged(
                    kind=change, node=node, incarnation=u.incarnation, status=_ALIVE, alive=u
                )
            )

    def _apply_suspect(self, u: Suspect | Dead, m: Member, now: float, out: list[Effect]) -> None:
        """A fresh suspicion (or one at a newer incarnation): start Lifeguard's timer."""
        node = u.node
        n = self.table.live + 1
        lo, hi = self.cfg.suspicion_bounds(n)
        s = Suspicion(
            accuser=u.accuser,
            incarnation=u.incarnation,
            k=self.cfg.expected_confirmations(n),
            min_timeout=lo,
            max_timeout=hi,
            start=now,
        )
        self._suspicions[node] = s
        since = now if m.status != _SUSPECT else m.since
        self.table.put(Member(node, _SUSPECT, u.incarnation, m.alive, since, u, now))
        out.append(self._timer(TimerKind.SUSPICION, node, s.deadline()))
        self._queue(u)
        if m.status != _SUSPECT:
            out.append(
                MemberChanged(
                    kind=ChangeKind.SUSPECT,
                    node=node,
                    incarnation=u.incarnation,
                    status=_SUSPECT,
                    alive=m.alive,
                    accuser=u.accuser,
                )
            )

    def _apply_dead(self, u: Suspect | Dead, m: Member, now: float, out: list[Effect]) -> None:
        """A death: forget the suspicion, remember when, and (``eager_dead``) gossip it now."""
        node = u.node
        self.table.put(Member(node, _DEAD, u.incarnation, m.alive, now, u, now))
        self._suspicions.pop(node, None)
        self._gens.pop((TimerKind.SUSPICION, node), None)
        self._dead_since[node] = now
        self._rel(node, now).status(now, False, self.cfg.reliability_half_life)
        self._queue(u)
        if self.cfg.eager_dead:
            self._gossip_soon(now, out)
        out.append(
            MemberChanged(
                kind=ChangeKind.DEAD,
                node=node,
                incarnation=u.incarnation,
                status=_DEAD,
                alive=m.alive,
                accuser=u.accuser,
            )
        )

    def _about_me(self, u: Update, kind: UpdateKind, verified: bool) -> None:
        if u.incarnation < self.incarnation:
            self.counters["stale"] += 1
            return
        if kind is UpdateKind.ALIVE and u.incarnation == self.incarnation:
            return  # our own record echoed back
        # Otherwise: a record from an earlier life of ours (newer than where we started), or an
        # accusation at our current incarnation: refute either.
        if not verified and not self._verify(u):
            self.counters["forged"] += 1
            return
        self._refute(u.incarnation)
        if kind is UpdateKind.DEAD:
            self._declared_dead = True
