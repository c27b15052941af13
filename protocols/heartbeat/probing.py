"""Probing: SWIM's failure detector with Lifeguard's and the daemon's additions.

One protocol period (``probe_interval * (awareness + 1)``): PING the next target (a member the
transport just lost, or one whose phi crossed the threshold, goes first; then the ring successor
or the shuffled round robin, see :mod:`.targets`), ping once more halfway through the probe
timeout, and if no ACK comes by then, ask ``indirect_checks`` random helpers to ping it for us
(PING_REQ; each answers ACK or, on its own timeout, a NACK carrying its signed witness
``Suspect``). A period that ends in silence accuses the target, tells the target itself, and
counts the helpers' witnesses as confirmations. Missed nacks raise our local-health score.

The daemon's final pings (``final_ping``): the accuser pings its suspect halfway through the
suspicion, and any other member pings it once more before its own suspicion timer declares it
dead. Also here: pinging members we are not tracking (joins, reconnects to the dead).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .core import MAX_RELAYS, MAX_SMALL_MAPS, MAX_URGENT
from .events import Effect, Send, TimerKind
from .messages import Dead, Packet, PacketKind, Suspect, Update
from .state import MemberStatus
from .targets import ProbeTargets

__all__ = ["Probing"]

_ALIVE, _SUSPECT, _DEAD = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD


@dataclass
class _Probe:
    seq: int
    target: bytes
    start: float
    #: 0: the periodic probe (ring, phi, urgent or round robin); 1: the round robin's own
    #: probe when the ring takes every period (``ring_probe_every`` 1).
    lane: int = 0
    helpers: tuple[bytes, ...] = ()
    nacks: int = 0
    nacked: set[bytes] = field(default_factory=set)
    #: Helpers' signed witness suspicions, from their NACKs.
    witnesses: list[Suspect] = field(default_factory=list)
    done: bool = False


@dataclass(slots=True, kw_only=True)
class _Final:
    """A direct ping of a suspect outside the probe cycle (``final_ping``)."""

    node: bytes
    inc: int
    #: True: our suspicion ran out; silence until ``end`` declares the member dead. False: we
    #: are the accuser, pinging it halfway through its suspicion; nothing happens at ``end``.
    declare: bool
    #: When the pings still to send are due.
    pings: list[float]
    end: float


class Probing(ProbeTargets):
    """The probe cycle, indirect probes and relays, suspicion timers and final pings."""

    def _init_probing(self) -> None:
        self._init_targets()
        #: Open probes by sequence number: at most one per lane (two lanes).
        self._open: dict[int, _Probe] = {}
        self._lane: list[_Probe | None] = [None, None]
        #: Final checks and the accuser's mid-suspicion pings (``final_ping``), by seq.
        self._finals: dict[int, _Final] = {}
        self._final_of: dict[bytes, int] = {}
        #: Suspects we accused and pinged halfway through: member -> incarnation.
        self._pinged_mid: dict[bytes, int] = {}
        #: Pings we send for a helper's PING_REQ: our seq -> (origin, its seq, target).
        self._relays: dict[int, tuple[bytes, int, bytes]] = {}
        self._untracked: dict[int, bytes] = {}  # join and reconnect pings

    # -- the probe cycle -----------------------------------------------------------------------

    def _start_probe(self, target: bytes, now: float, out: list[Effect], lane: int = 0) -> None:
        cfg, aw = self.cfg, self.awareness
        seq = self._next_seq()
        self.counters["probes"] += 1
        pr = _Probe(seq=seq, target=target, start=now, lane=lane)
        self._open[seq] = self._lane[lane] = pr
        d = self._phi.get(target)
        if d is not None:
            d.last_probed = now
        out.append(
            Send(to=target, msg=self._packet(PacketKind.PING, target, seq=seq, target=target))
        )
        # One more ping halfway through the probe timeout, one with the helpers' requests: on a
        # lossy link a lost ping or ack then rarely turns into a false suspicion (each costs
        # news that every member must hear), and only silent probes pay for it. The ACK timer
        # is set by the RESEND one, only when still silent: a daemon wakes no more often.
        out.append(self._timer(TimerKind.RESEND, seq, now + aw.scale(cfg.probe_timeout) / 2))
        out.append(self._timer(TimerKind.INDIRECT, seq, now + aw.scale(cfg.probe_interval)))

    def _on_probe_timer(self, arg: None, now: float, out: list[Effect]) -> None:
        if self._lane[0] is not None:
            self._finish_probe(self._lane[0], now, out)
        target = self._pick_target(now)
        if target is not None:
            self._start_probe(target, now, out)
        period = self.awareness.scale(self.cfg.probe_interval)
        out.append(self._timer(TimerKind.PROBE, None, now + period))
        if self._round_robin_due():
            # Half a period after the ring probe: the two rarely overlap, and a member the
            # ring probe found silent is not probed twice at once.
            out.append(self._timer(TimerKind.ROUND_ROBIN, None, now + period / 2))

    def _on_round_robin_timer(self, arg: None, now: float, out: list[Effect]) -> None:
        if self._lane[1] is not None:
            self._finish_probe(self._lane[1], now, out)
        busy = {p.target for p in self._open.values()}
        target = self._next_in_order()
        if target is not None and target not in busy:
            self._start_probe(target, now, out, lane=1)

    def _on_resend_timer(self, seq: int, now: float, out: list[Effect]) -> None:
        pr = self._open.get(seq)
        if pr is not None and not pr.done:
            self._ping(pr.target, pr.seq, out)
            at = pr.start + self.awareness.scale(self.cfg.probe_timeout)
            out.append(self._timer(TimerKind.ACK, pr.seq, at))
        elif seq in self._relays:
            self._ping(self._relays[seq][2], seq, out)

    def _on_ack_timer(self, seq: int, now: float, out: list[Effect]) -> None:
        """Still no ACK: ping once more and ask the helpers."""
        pr = self._open.get(seq)
        if pr is not None and not pr.done:
            self._ping(pr.target, pr.seq, out)
            helpers = self._random_nodes(self.cfg.indirect_checks, {pr.target}, now)
            pr.helpers = tuple(helpers)
            for h in helpers:
                pk = self._packet(PacketKind.PING_REQ, h, seq=pr.seq, target=pr.target)
                out.append(Send(to=h, msg=pk))

    def _on_indirect_timer(self, seq: int, now: float, out: list[Effect]) -> None:
        pr = self._open.get(seq)
        if pr is not None:
            self._finish_probe(pr, now, out)

    def _ping(self, target: bytes, seq: int, out: list[Effect]) -> None:
        """Ping ``target`` again under a probe's (or relay's) sequence number."""
        self.counters["ping_resends"] += 1
        pk = self._packet(PacketKind.PING, target, seq=seq, target=target)
        out.append(Send(to=target, msg=pk))

    def _close_probe(self, pr: _Probe) -> None:
        self._open.pop(pr.seq, None)
        if self._lane[pr.lane] is pr:
            self._lane[pr.lane] = None

    def _finish_probe(self, pr: _Probe, now: float, out: list[Effect]) -> None:
        """The period ended without an ack: Lifeguard's awareness, then accuse the target."""
        self._close_probe(pr)
        if pr.done:
            return
        pr.done = True
        expected = len(pr.helpers)
        if expected == 0:
            self.awareness.apply_delta(1)
        elif pr.nacks < expected:
            self.awareness.apply_delta(expected - pr.nacks)
        self.counters["probes_failed"] += 1
        m = self.table.get(pr.target)
        if m is None or m.status == _DEAD:
            return
        self._rel(pr.target, now).probed(False, self.cfg.reliability_probe_alpha)
        accusation = self._accusation(Suspect, m.node, m.incarnation)
        self._apply(accusation, now, out, verified=True)
        # Tell the suspect itself at once: a live one refutes in one round trip (its answer
        # comes straight back to us) instead of waiting for the news to reach it by gossip.
        pk = self._packet(PacketKind.GOSSIP, m.node, first=(accusation,))
        out.append(Send(to=m.node, msg=pk))
        if self.cfg.final_ping:
            self._mid_suspicion_ping(m.node, m.incarnation, now, out)
        # The helpers that could not reach it either are independent confirmations (Lifeguard):
        # with all of them the suspicion starts at its minimum.
        for w in pr.witnesses:
            if w.node == pr.target:
                self._apply(w, now, out)

    def _probe_succeeded(self, pr: _Probe, now: float) -> None:
        pr.done = True
        self._close_probe(pr)
        self.awareness.apply_delta(-1)
        self._rel(pr.target, now).probed(True, self.cfg.reliability_probe_alpha)

    # -- packets -------------------------------------------------------------------------------

    def _on_ping(self, sender: bytes, p: Packet, now: float, out: list[Effect]) -> None:
        """Answer with an ACK, leading with our alive record if the sender's is out of date."""
        push_mine = p.yinc < self.incarnation
        first = (self.self_alive,) if push_mine else ()
        self._pushed[sender] = self.incarnation if push_mine else self._pushed.get(sender, -1)
        pk = self._packet(PacketKind.ACK, sender, seq=p.seq, first=first)
        out.append(Send(to=sender, msg=pk))

    def _on_ack(self, sender: bytes, p: Packet, now: float, out: list[Effect]) -> None:
        """An answer to our probe (direct or through a helper), to a ping we relay for someone
        else, to a final ping, or to an untracked ping."""
        pr = self._open.get(p.seq)
        fin = self._finals.get(p.seq)
        if (
            pr is not None
            and not pr.done
            and (sender == pr.target or (sender in pr.helpers and p.target == pr.target))
        ):
            self._probe_succeeded(pr, now)
        elif p.seq in self._relays and self._relays[p.seq][2] == sender:
            origin, oseq, target = self._relays.pop(p.seq)
            pk = self._packet(PacketKind.ACK, origin, seq=oseq, target=target)
            out.append(Send(to=origin, msg=pk))
        elif fin is not None and fin.node == sender:
            self._end_final(p.seq)
            self._answered_final(sender, fin.inc, now, out)
        elif self._untracked.pop(p.seq, None) != sender:
            self.counters["unexpected"] += 1

    def _on_ping_req(self, sender: bytes, p: Packet, now: float, out: list[Effect]) -> None:
        """Ping ``p.target`` on the sender's behalf (bounded: at most ``MAX_RELAYS`` open)."""
        if p.target and p.target != self.me and p.target != sender:
            if len(self._relays) >= MAX_RELAYS:
                self.counters["too_frequent"] += 1
            else:
                seq = self._next_seq()
                self._relays[seq] = (sender, p.seq, p.target)
                pk = self._packet(PacketKind.PING, p.target, seq=seq, target=p.target)
                out.append(Send(to=p.target, msg=pk))
                at = now + self.awareness.scale(self.cfg.probe_timeout)
                out.append(self._timer(TimerKind.RESEND, seq, now + (at - now) / 2))
                out.append(self._timer(TimerKind.RELAY, seq, at))

    def _on_relay_timer(self, seq: int, now: float, out: list[Effect]) -> None:
        relay = self._relays.pop(seq, None)
        if relay is not None:
            origin, oseq, target = relay
            # Our silence is a witness statement: a Suspect signed by us that the origin
            # counts as an independent confirmation if, and only if, its own probe fails.
            m = self.table.get(target)
            first: tuple[Update, ...] = ()
            if m is not None and m.status != _DEAD:
                first = (self._accusation(Suspect, target, m.incarnation),)
            pk = self._packet(PacketKind.NACK, origin, seq=oseq, target=target, first=first)
            out.append(Send(to=origin, msg=pk))

    def _on_nack(self, sender: bytes, p: Packet, now: float, out: list[Effect]) -> None:
        pr = self._open.get(p.seq)
        if pr is not None and sender in pr.helpers:
            if sender not in pr.nacked:
                pr.nacked.add(sender)
                pr.nacks += 1
            if pr.nacks == len(pr.helpers) and not pr.done:
                # Every helper is alive and could not reach the target either: the period
                # has nothing more to learn, so accuse now instead of at its end.
                self._finish_probe(pr, now, out)

    def _witnesses(self, sender: bytes, p: Packet) -> tuple[Update, ...]:
        """A helper's NACK may carry its witness Suspect of the target: kept aside for our
        probe (applied only if the probe fails), never applied on arrival."""
        pr = self._open.get(p.seq)
        ours = pr if pr is not None and not pr.done and sender in pr.helpers else None
        rest: list[Update] = []
        for u in p.updates:
            if type(u) is Suspect and u.node == p.target and u.accuser == sender:
                if ours is not None and len(ours.witnesses) < len(ours.helpers):
                    ours.witnesses.append(u)
            else:
                rest.append(u)
        return tuple(rest)

    # -- suspicions and final pings ------------------------------------------------------------

    def _on_suspicion_timer(self, node: bytes, now: float, out: list[Effect]) -> None:
        m = self.table.get(node)
        s = self._suspicions.get(node)
        if (
            m is not None
            and m.status == _SUSPECT
            and s is not None
            and s.incarnation == m.incarnation
        ):
            if self.cfg.final_ping and self._pinged_mid.pop(node, None) != m.incarnation:
                self._final_check(m.node, m.incarnation, now, out)
            else:
                # No check asked for, or we are the accuser and already pinged the suspect
                # halfway through its suspicion (its refutation would have come back).
                dead = self._accusation(Dead, m.node, m.incarnation)
                self._apply(dead, now, out, verified=True)

    def _on_final_timer(self, seq: int, now: float, out: list[Effect]) -> None:
        fin = self._finals.get(seq)
        if fin is None:
            return
        if fin.pings:
            self._ping(fin.node, seq, out)
            fin.pings.pop(0)
            at = fin.pings[0] if fin.pings else fin.end
            out.append(self._timer(TimerKind.FINAL, seq, at))
            return
        self._end_final(seq)
        m = self.table.get(fin.node)
        s = self._suspicions.get(fin.node)
        if (
            fin.declare
            and m is not None
            and m.status == _SUSPECT
            and m.incarnation == fin.inc
            and s is not None
            and s.incarnation == fin.inc
        ):
            dead = self._accusation(Dead, fin.node, fin.inc)
            self._apply(dead, now, out, verified=True)

    def _final_check(self, node: bytes, inc: int, now: float, out: list[Effect]) -> None:
        """Our suspicion of ``node`` ran out: ping it once more (twice, the second halfway)
        before declaring it dead. The PING's header says we hold it suspect, so a live member
        refutes (the buddy system) and its ACK carries the newer alive record; silence until
        ``probe_timeout`` means dead."""
        old = self._final_of.get(node)
        if old is not None:
            if self._finals[old].declare:
                return  # a check is already under way
            self._end_final(old)  # the accuser's mid-suspicion ping gives way to the check
        if len(self._finals) >= MAX_RELAYS:
            # Bounded: past that many checks at once (an island that lost the majority), a
            # suspicion that runs out is a death, as without the check; dropping a check
            # instead would leave its member suspect with no timer.
            self.counters["final_skipped"] += 1
            self._apply(self._accusation(Dead, node, inc), now, out, verified=True)
            return
        timeout = self.awareness.scale(self.cfg.probe_timeout)
        seq = self._new_final(node, inc, True, [now, now + timeout / 2], now + timeout)
        self._ping(node, seq, out)
        self._finals[seq].pings.pop(0)
        out.append(self._timer(TimerKind.FINAL, seq, now + timeout / 2))

    def _mid_suspicion_ping(self, node: bytes, inc: int, now: float, out: list[Effect]) -> None:
        """We accused ``node`` and told it so: ping it again halfway through the minimum
        suspicion, so that one lost packet (our Suspect or its refutation) does not kill a live
        member, and our own timer can then declare it dead without a final check."""
        if node in self._final_of or len(self._finals) >= MAX_RELAYS:
            return
        lo, _ = self.cfg.suspicion_bounds(self.table.live + 1)
        at = now + lo / 2
        seq = self._new_final(node, inc, False, [at], at + self.cfg.probe_timeout)
        out.append(self._timer(TimerKind.FINAL, seq, at))
        if len(self._pinged_mid) >= MAX_SMALL_MAPS:
            self._pinged_mid.clear()
        self._pinged_mid[node] = inc

    def _new_final(
        self, node: bytes, inc: int, declare: bool, pings: list[float], end: float
    ) -> int:
        seq = self._next_seq()
        self._finals[seq] = _Final(node=node, inc=inc, declare=declare, pings=pings, end=end)
        self._final_of[node] = seq
        self.counters["final_checks" if declare else "mid_suspicion_pings"] += 1
        return seq

    def _end_final(self, seq: int) -> None:
        fin = self._finals.pop(seq, None)
        if fin is not None and self._final_of.get(fin.node) == seq:
            del self._final_of[fin.node]
        self._gens.pop((TimerKind.FINAL, seq), None)

    def _answered_final(self, node: bytes, inc: int, now: float, out: list[Effect]) -> None:
        """The suspect answered our final ping. Its ACK carried its refutation (applied before
        we got here), unless it is a peer that answers but never refutes: it is alive, so it
        stays suspect and gets another suspicion period instead of being declared dead."""
        self.counters["final_answers"] += 1
        m = self.table.get(node)
        s = self._suspicions.get(node)
        if m is not None and m.status == _SUSPECT and m.incarnation == inc and s is not None:
            lo, _ = self.cfg.suspicion_bounds(self.table.live + 1)
            out.append(self._timer(TimerKind.SUSPICION, node, now + lo))

    # -- hints from the transport, the dead --------------------------------------------------

    def _on_discovered(self, node: bytes, now: float, out: list[Effect]) -> None:
        if node == self.me:
            return
        m = self.table.get(node)
        if m is None or m.status == _DEAD:
            self._ping_untracked(node, out)

    def _on_disconnected(self, node: bytes, now: float, out: list[Effect]) -> None:
        """The transport lost ``node``: probe it now (or next, if a probe is open)."""
        m = self.table.get(node)
        if m is None or m.status == _DEAD:
            return
        pr = self._lane[0]
        if pr is None:
            self._start_probe(node, now, out)
        elif node not in self._urgent and node != pr.target and len(self._urgent) < MAX_URGENT:
            self._urgent.append(node)

    def _ping_untracked(self, node: bytes, out: list[Effect]) -> None:
        seq = self._next_seq()
        if len(self._untracked) >= MAX_RELAYS:
            del self._untracked[next(iter(self._untracked))]
        self._untracked[seq] = node
        pk = self._packet(PacketKind.PING, node, seq=seq, target=node, first=(self.self_alive,))
        out.append(Send(to=node, msg=pk))

    def _on_reconnect_timer(self, arg: None, now: float, out: list[Effect]) -> None:
        """Forget the long dead, and ping one random dead member (Serf's reconnect): one that
        was only cut off answers, learns it was declared dead and refutes."""
        cfg = self.cfg
        for node, t in list(self._dead_since.items()):
            if now - t > cfg.dead_retention:
                del self._dead_since[node]
                self.table.remove(node)
                self.reliability.pop(node, None)
        if self._dead_since:
            self._ping_untracked(self._rng.choice(list(self._dead_since)), out)
        out.append(self._timer(TimerKind.RECONNECT, None, now + cfg.reconnect_interval))
