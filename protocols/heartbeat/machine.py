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
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from .awareness import Awareness
from .broadcast_queue import BroadcastQueue
from .codec import PACKET_OVERHEAD, UPDATE_OVERHEAD, accusation_payload, alive_payload, update_size
from .config import HeartbeatConfig
from .detector import PhiAccrual, Reliability
from .errors import LocalProtocolError
from .events import (
    ChangeKind,
    Effect,
    Event,
    LocalStateChanged,
    MemberChanged,
    MessageReceived,
    PeerDisconnected,
    PeerDiscovered,
    Send,
    SetTimer,
    Started,
    TaskOutcome,
    TimerFired,
    TimerKind,
)
from .messages import Alive, Dead, NodeState, Packet, PacketKind, Suspect, Update
from .signing import Signer, Verifier
from .state import CONFIRM, MemberStatus, UpdateKind, transition
from .suspicion import Suspicion
from .table import Member, MemberBase, MemberTable, bucket_of, entry_hash, ring_position

_T = TypeVar("_T")


class Rng(Protocol):
    """What the machine draws from the seeded source its caller passes in (a
    ``random.Random`` fits); it never creates one."""

    def randrange(self, start: int, stop: int = ..., /) -> int: ...

    def uniform(self, a: float, b: float, /) -> float: ...

    def choice(self, seq: Sequence[_T], /) -> _T: ...

    def sample(self, population: Sequence[_T], k: int, /) -> list[_T]: ...


__all__ = ["MemberView", "Membership"]

_ALIVE, _SUSPECT, _DEAD = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD
_KIND = {Alive: UpdateKind.ALIVE, Suspect: UpdateKind.SUSPECT, Dead: UpdateKind.DEAD}
_STATUS = {Alive: int(_ALIVE), Suspect: int(_SUSPECT), Dead: int(_DEAD)}
#: Bounds on bookkeeping a peer can make us grow.
_MAX_RELAYS = 256
_MAX_URGENT = 64
_MAX_SMALL_MAPS = 8192


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


class Membership:
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
        self.me = signer.node_id
        self.cfg = config
        self._signer = signer
        self._verifier = verifier
        self._rng = rng
        self.incarnation = incarnation
        self.state = state
        self.self_alive = self._sign_alive()
        self.table = MemberTable(self.me, base, buckets=config.sync_buckets)
        self.awareness = Awareness(config.awareness_max_multiplier)
        self.queue: BroadcastQueue[Update] = BroadcastQueue()
        #: Refusals and other notable happenings, by reason (see errors.REFUSAL_REASONS).
        self.counters: Counter[str] = Counter()
        self.reliability: dict[bytes, Reliability] = {}
        self._gens: dict[tuple[TimerKind, object], int] = {}
        self._gen = 0
        self._seq = 0
        #: Open probes by sequence number: at most one per lane (two lanes).
        self._open: dict[int, _Probe] = {}
        self._lane: list[_Probe | None] = [None, None]
        #: Final pings (``final_ping``): seq -> [suspect, its incarnation, start, re-sent].
        #: Final checks and the accuser's mid-suspicion pings (``final_ping``), by seq.
        self._finals: dict[int, _Final] = {}
        self._final_of: dict[bytes, int] = {}
        #: Suspects we accused and pinged halfway through: member -> incarnation.
        self._pinged_mid: dict[bytes, int] = {}
        self._retransmit_n = -1
        self._retransmit_limit = 0
        self._last_gossip = -math.inf
        self._gossip_at = math.inf
        self._relays: dict[int, tuple[bytes, int, bytes]] = {}
        self._untracked: dict[int, bytes] = {}  # join and reconnect pings
        self._suspicions: dict[bytes, Suspicion] = {}
        self._phi: dict[bytes, PhiAccrual] = {}
        self._urgent: list[bytes] = []
        self._pushed: dict[bytes, int] = {}
        self._budget: dict[bytes, tuple[float, float]] = {}
        self._dead_since: dict[bytes, float] = {}
        self._pending_state: NodeState | None = None
        self._last_state_sent = -math.inf
        self._order_n = 0
        self._order_pos = 0
        self._order_off = 0
        self._order_stride = 1
        self._synced = False
        self._push_pull_at = math.inf
        self._probes = 0
        self._periods = 0
        self._ring_pos = ring_position(self.me)
        self._ring_ref: list[tuple[int, bytes]] | None = None
        self._ring_at = 0
        self._declared_dead = False
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
            self._on_timer(key, now, out)  # type: ignore[arg-type]

    def _on_task_outcome(self, event: TaskOutcome, now: float, out: list[Effect]) -> None:
        if event.node in self.reliability or self.table.get(event.node) is not None:
            self._rel(event.node, now).task_outcome(event.success)

    # -- helpers -------------------------------------------------------------------------------

    def _timer(self, kind: TimerKind, arg: object, at: float) -> SetTimer:
        self._gen += 1
        key = (kind, arg)
        self._gens[key] = self._gen
        return SetTimer(key=key, at=at, generation=self._gen)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _sign_alive(self) -> Alive:
        sig = self._signer.sign(alive_payload(self.me, self.incarnation, self.state))
        return Alive(node=self.me, incarnation=self.incarnation, state=self.state, signature=sig)

    def _accusation(self, cls: type[Suspect] | type[Dead], node: bytes, inc: int) -> Update:
        kind = "suspect" if cls is Suspect else "dead"
        sig = self._signer.sign(accusation_payload(kind, node, inc, self.me))
        return cls(node=node, incarnation=inc, accuser=self.me, signature=sig)

    def _verify(self, u: Update) -> bool:
        if type(u) is Alive:
            return self._verifier.verify(
                u.node, alive_payload(u.node, u.incarnation, u.state), u.signature
            )
        kind = "suspect" if type(u) is Suspect else "dead"
        payload = accusation_payload(kind, u.node, u.incarnation, u.accuser)  # type: ignore[union-attr]
        return self._verifier.verify(u.accuser, payload, u.signature)  # type: ignore[union-attr]

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

    def _rel(self, node: bytes, now: float) -> Reliability:
        r = self.reliability.get(node)
        if r is None:
            m = self.table.get(node)
            r = self.reliability[node] = Reliability(now, m is None or m.status != _DEAD)
        return r

    def _heard(self, node: bytes, now: float) -> None:
        d = self._phi.pop(node, None)
        if d is None:
            d = PhiAccrual(now)
            if len(self._phi) >= self.cfg.phi_tracked:
                del self._phi[next(iter(self._phi))]  # least recently heard
        else:
            d.heard(now)
        self._phi[node] = d

    def _random_nodes(self, k: int, exclude: set[bytes], now: float, *, dead_ok: bool = False):  # type: ignore[no-untyped-def]
        """Up to k distinct random members, alive or suspect (or recently dead if asked)."""
        if k <= 0:
            return []
        ids = self.table.ids
        g2d = self.cfg.gossip_to_the_dead_time

        def ok(x: bytes) -> bool:
            if x == self.me or x in exclude:
                return False
            m = self.table.get(x)
            if m is None:
                return False
            return m.status != _DEAD or (dead_ok and now - m.since < g2d)

        n = len(ids)
        if n <= 4 * k + 16:
            cands = [x for x in ids if ok(x)]
            return self._rng.sample(cands, min(k, len(cands)))
        out: list[bytes] = []
        for _ in range(8 * k):
            x = ids[self._rng.randrange(n)]
            if x not in out and ok(x):
                out.append(x)
                if len(out) == k:
                    break
        return out

    def _next_in_order(self) -> bytes | None:
        """Round robin over a fresh pseudo-random permutation per pass (an affine map with a
        stride coprime to the pass size): every member is probed once per pass, in O(1) memory."""
        ids = self.table.ids
        for _ in range(len(ids) + 1):
            if self._order_pos >= self._order_n:
                n = len(ids)
                if n == 0:
                    return None
                stride = 1
                for _ in range(32):
                    s = self._rng.randrange(1, n) if n > 2 else 1
                    if math.gcd(s, n) == 1:
                        stride = s
                        break
                self._order_n, self._order_pos = n, 0
                self._order_off, self._order_stride = self._rng.randrange(n), stride
            idx = (self._order_off + self._order_pos * self._order_stride) % self._order_n
            self._order_pos += 1
            x = ids[idx]
            m = self.table.get(x)
            if m is not None and m.status != _DEAD:
                return x
        return None

    def _pick_target(self, now: float) -> bytes | None:
        while self._urgent:
            x = self._urgent.pop(0)
            m = self.table.get(x)
            if m is not None and m.status != _DEAD:
                return x
        # The phi accrual detector: a member gone unusually quiet is probed first, at most once
        # per two periods so the round robin (time-bounded completeness) keeps its pace.
        worst, worst_phi = None, self.cfg.phi_threshold
        gap = 2 * self.cfg.probe_interval
        for x, d in self._phi.items():
            if now - d.last_probed > gap:
                p = d.phi(now)
                if p > worst_phi:
                    m = self.table.get(x)
                    if m is not None and m.status != _DEAD:
                        worst, worst_phi = x, p
        if worst is not None:
            self.counters["phi_probes"] += 1
            return worst
        self._probes += 1
        k = self.cfg.ring_probe_every
        if k and self._probes % k == 0:
            x = self._ring_successor()
            if x is not None:
                return x
        return self._next_in_order()

    def _round_robin_due(self) -> bool:
        """With the ring taking every period: is this period's round-robin probe due? (Counted
        in periods, whatever the period's own probe went to: urgent and phi probes too.)"""
        self._periods += 1
        return self.cfg.ring_probe_every == 1 and self._periods % self.cfg.round_robin_every == 0

    def _ring_successor(self) -> bytes | None:
        """The first member after us on the ring that we hold alive (else the first we do not
        hold dead). A suspect successor is skipped: it is being checked already, and if it did
        crash, the member after it may have crashed with it (correlated failures) and would
        otherwise wait for the suspect's death before its first probe."""
        ring = self.table.ring()
        n = len(ring)
        if ring is not self._ring_ref:
            self._ring_ref = ring
            self._ring_at = bisect.bisect_right(ring, (self._ring_pos, self.me))
        suspect = None
        for k in range(n):
            x = ring[(self._ring_at + k) % n][1]
            if x == self.me:
                continue
            m = self.table.get(x)
            if m is not None:
                if m.status == _ALIVE:
                    return x
                if m.status == _SUSPECT and suspect is None:
                    suspect = x
        return suspect

    # -- start, local state, hints -------------------------------------------------------------

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

    def _sync_with_random(self, now: float, out: list[Effect], *, full: bool) -> None:
        """Push-pull with one random member: a full bounded page when joining, else our bucket
        digests (anti-entropy: in-sync members exchange ``2 * 8 * sync_buckets`` bytes)."""
        for peer in self._random_nodes(1, set(), now):
            self._synced = True
            if full:
                out.append(Send(to=peer, msg=self._sync_packet(PacketKind.SYNC, peer)))
            else:
                pk = self._page_packet(PacketKind.SYNC, peer, ())
                out.append(Send(to=peer, msg=pk))

    # -- anti-entropy --------------------------------------------------------------------------

    def _sync_soon(self, now: float, out: list[Effect]) -> None:
        """We were declared dead (a healed partition, a long stall): our view has drifted, and
        an epidemic busy with many refutations misses a few members, so bring the next digest
        exchange forward to within a few periods (once; it re-arms as usual). Only members
        that were declared dead pay for it, so its cost does not grow with N."""
        cfg = self.cfg
        if cfg.push_pull_interval <= 0:
            return
        at = now + 3 * cfg.probe_interval * self._rng.uniform(1, 2)
        if at < self._push_pull_at:
            self._push_pull_at = at
            out.append(self._timer(TimerKind.PUSH_PULL, None, at))

    def _digests(self) -> list[int]:
        """Our bucket digests: the table's, plus our own (member, incarnation, alive) entry."""
        d = list(self.table.digests)
        d[bucket_of(self.me, len(d))] ^= entry_hash(self.me, self.incarnation, _ALIVE)
        return d

    def _digest_bytes(self) -> bytes:
        return b"".join(x.to_bytes(8, "big") for x in self._digests())

    def _differing(self, digest: bytes) -> list[int] | None:
        """Buckets whose digest differs from ``digest`` (None: not comparable, e.g. another
        bucket count)."""
        mine = self._digests()
        if len(digest) != 8 * len(mine):
            return None
        return [
            b for b, x in enumerate(mine) if int.from_bytes(digest[8 * b : 8 * b + 8], "big") != x
        ]

    def _diff_records(self, buckets: list[int], skip: set[tuple[bytes, int, int]]) -> list[Update]:
        """Our records of ``buckets``, most recently changed first, within ``sync_diff_bytes``;
        records the peer just sent us (``skip``: node, incarnation, status) are left out."""
        mine = bucket_of(self.me, self.cfg.sync_buckets)
        cands: list[tuple[float, Update]] = []
        for b in buckets:
            if b == mine and (self.me, self.incarnation, int(_ALIVE)) not in skip:
                cands.append((math.inf, self.self_alive))
            for m in self.table.in_bucket(b):
                if (m.node, m.incarnation, int(m.status)) not in skip:
                    cands.append((m.updated, m.last))
        cands.sort(key=lambda c: -c[0])
        budget = self.cfg.sync_diff_bytes
        page: list[Update] = []
        for _, u in cands:
            cost = update_size(u) + UPDATE_OVERHEAD
            if cost > budget:
                break
            budget -= cost
            page.append(u)
        return page

    def _page_packet(
        self, kind: PacketKind, to: bytes, updates: tuple[Update, ...], *, digest: bool = True
    ) -> Packet:
        """A push-pull packet carrying ``updates`` (no piggyback) and, if asked, our digests."""
        m = self.table.get(to)
        return Packet(
            kind=kind,
            sender=self.me,
            inc=self.incarnation,
            yinc=-1 if m is None else m.incarnation,
            ystatus=-1 if m is None else int(m.status),
            updates=updates,
            digest=self._digest_bytes() if digest else b"",
        )

    def _on_sync(self, sender: bytes, p: Packet, out: list[Effect]) -> None:
        """SYNC, SYNC_ACK and SYNC_PAGE after their updates were applied."""
        kind = p.kind
        diff = self._differing(p.digest) if p.digest else None
        heavy = diff is not None and 4 * len(diff) > self.cfg.sync_buckets
        if kind is PacketKind.SYNC:
            if diff is None or heavy:
                # A join (no digest) or a healed partition: a bounded page of our view (with
                # our digests when theirs came, so the initiator answers with its page).
                pk = self._sync_packet(PacketKind.SYNC_ACK, sender)
                if diff is not None:
                    self.counters["sync_pages"] += 1
                    pk = replace(pk, digest=self._digest_bytes())
            else:
                self.counters["sync_digests"] += 1
                pk = self._page_packet(
                    PacketKind.SYNC_ACK, sender, tuple(self._diff_records(diff, set()))
                )
            out.append(Send(to=sender, msg=pk))
        elif kind is PacketKind.SYNC_ACK and diff:
            # What still differs after their records: ours may be the newer ones.
            if heavy:
                pk = self._sync_packet(PacketKind.SYNC_PAGE, sender)
            else:
                sent = {(u.node, u.incarnation, _STATUS[type(u)]) for u in p.updates}
                page = self._diff_records(diff, sent)
                if not page:
                    return
                pk = self._page_packet(PacketKind.SYNC_PAGE, sender, tuple(page), digest=False)
            out.append(Send(to=sender, msg=pk))

    def _sync_packet(self, kind: PacketKind, to: bytes) -> Packet:
        """A bounded page of our view: accusations (newest first), then random alive records
        with ours first. A joiner learns who is gone; a healed island learns who is back."""
        budget = self.cfg.max_sync_bytes
        page: list[Update] = [self.self_alive]
        budget -= update_size(self.self_alive) + UPDATE_OVERHEAD
        seen = {self.me}
        accused = sorted(self._dead_since.items(), key=lambda kv: -kv[1])
        candidates = [x for x in self._suspicions] + [x for x, _ in accused]
        ids = self.table.ids
        for _ in range(min(len(ids), 4 * (budget // 200 + 1))):
            candidates.append(ids[self._rng.randrange(len(ids))])
        for x in candidates:
            if x in seen:
                continue
            seen.add(x)
            m = self.table.get(x)
            if m is None:
                continue
            cost = update_size(m.last) + UPDATE_OVERHEAD
            if cost > budget:
                break
            budget -= cost
            page.append(m.last)
        return self._page_packet(kind, to, tuple(page), digest=False)

    def _on_local_state(self, state: NodeState, now: float, out: list[Effect]) -> None:
        if state == (self._pending_state or self.state):
            return
        self._pending_state = state
        due = self._last_state_sent + self.cfg.min_state_interval
        if now >= due:
            self._publish_state(now)
        elif (TimerKind.STATE, None) not in self._gens:
            out.append(self._timer(TimerKind.STATE, None, due))

    def _publish_state(self, now: float) -> None:
        if self._pending_state is None:
            return
        self.state, self._pending_state = self._pending_state, None
        self.incarnation += 1
        self.self_alive = self._sign_alive()
        self._queue(self.self_alive)
        self._last_state_sent = now

    def _on_discovered(self, node: bytes, now: float, out: list[Effect]) -> None:
        if node == self.me:
            return
        m = self.table.get(node)
        if m is None or m.status == _DEAD:
            self._ping_untracked(node, out)

    def _ping_untracked(self, node: bytes, out: list[Effect]) -> None:
        seq = self._next_seq()
        if len(self._untracked) >= _MAX_RELAYS:
            del self._untracked[next(iter(self._untracked))]
        self._untracked[seq] = node
        out.append(
            Send(
                to=node,
                msg=self._packet(
                    PacketKind.PING, node, seq=seq, target=node, first=(self.self_alive,)
                ),
            )
        )

    def _on_disconnected(self, node: bytes, now: float, out: list[Effect]) -> None:
        m = self.table.get(node)
        if m is None or m.status == _DEAD:
            return
        pr = self._lane[0]
        if pr is None:
            self._start_probe(node, now, out)
        elif node not in self._urgent and node != pr.target and len(self._urgent) < _MAX_URGENT:
            self._urgent.append(node)

    # -- probing -------------------------------------------------------------------------------

    def _start_probe(self, target: bytes, now: float, out: list[Effect], lane: int = 0) -> None:
        cfg, aw = self.cfg, self.awareness
        seq = self._next_seq()
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

    def _on_timer(self, key: tuple[TimerKind, object], now: float, out: list[Effect]) -> None:
        kind, arg = key
        cfg = self.cfg
        if kind is TimerKind.PROBE:
            if self._lane[0] is not None:
                self._finish_probe(self._lane[0], now, out)
            target = self._pick_target(now)
            if target is not None:
                self._start_probe(target, now, out)
            period = self.awareness.scale(cfg.probe_interval)
            out.append(self._timer(TimerKind.PROBE, None, now + period))
            if self._round_robin_due():
                # Half a period after the ring probe: the two rarely overlap, and a member the
                # ring probe found silent is not probed twice at once.
                out.append(self._timer(TimerKind.ROUND_ROBIN, None, now + period / 2))
        elif kind is TimerKind.ROUND_ROBIN:
            if self._lane[1] is not None:
                self._finish_probe(self._lane[1], now, out)
            busy = {p.target for p in self._open.values()}
            target = self._next_in_order()
            if target is not None and target not in busy:
                self._start_probe(target, now, out, lane=1)
        elif kind is TimerKind.RESEND:
            pr = self._open.get(arg)  # type: ignore[arg-type]
            if pr is not None and not pr.done:
                self._ping(pr.target, pr.seq, out)
                at = pr.start + self.awareness.scale(cfg.probe_timeout)
                out.append(self._timer(TimerKind.ACK, pr.seq, at))
            elif arg in self._relays:
                self._ping(self._relays[arg][2], arg, out)  # type: ignore[index]
        elif kind is TimerKind.ACK:
            pr = self._open.get(arg)  # type: ignore[arg-type]
            if pr is not None and not pr.done:
                self._ping(pr.target, pr.seq, out)
                helpers = self._random_nodes(cfg.indirect_checks, {pr.target}, now)
                pr.helpers = tuple(helpers)
                for h in helpers:
                    pk = self._packet(PacketKind.PING_REQ, h, seq=pr.seq, target=pr.target)
                    out.append(Send(to=h, msg=pk))
        elif kind is TimerKind.INDIRECT:
            pr = self._open.get(arg)  # type: ignore[arg-type]
            if pr is not None:
                self._finish_probe(pr, now, out)
        elif kind is TimerKind.RELAY:
            relay = self._relays.pop(arg, None)  # type: ignore[arg-type]
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
        elif kind is TimerKind.SUSPICION:
            node = arg
            m = self.table.get(node)  # type: ignore[arg-type]
            s = self._suspicions.get(node)  # type: ignore[arg-type]
            if (
                m is not None
                and m.status == _SUSPECT
                and s is not None
                and s.incarnation == m.incarnation
            ):
                if cfg.final_ping and self._pinged_mid.pop(node, None) != m.incarnation:  # type: ignore[arg-type]
                    self._final_check(m.node, m.incarnation, now, out)
                else:
                    # No check asked for, or we are the accuser and already pinged the suspect
                    # halfway through its suspicion (its refutation would have come back).
                    dead = self._accusation(Dead, m.node, m.incarnation)
                    self._apply(dead, now, out, verified=True)
        elif kind is TimerKind.FINAL:
            fin = self._finals.get(arg)  # type: ignore[arg-type]
            if fin is not None:
                if fin.pings:
                    self._ping(fin.node, arg, out)  # type: ignore[arg-type]
                    fin.pings.pop(0)
                    at = fin.pings[0] if fin.pings else fin.end
                    out.append(self._timer(TimerKind.FINAL, arg, at))
                else:
                    self._end_final(arg)  # type: ignore[arg-type]
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
        elif kind is TimerKind.GOSSIP:
            self._last_gossip = now
            if len(self.queue):
                for t in self._random_nodes(cfg.gossip_nodes, set(), now, dead_ok=True):
                    pk = self._packet(PacketKind.GOSSIP, t)
                    if pk.updates:
                        out.append(Send(to=t, msg=pk))
            self._gossip_at = now + cfg.gossip_interval
            out.append(self._timer(TimerKind.GOSSIP, None, self._gossip_at))
        elif kind is TimerKind.RECONNECT:
            for node, t in list(self._dead_since.items()):
                if now - t > cfg.dead_retention:
                    del self._dead_since[node]
                    self.table.remove(node)
                    self.reliability.pop(node, None)
            if self._dead_since:
                self._ping_untracked(self._rng.choice(list(self._dead_since)), out)
            out.append(self._timer(TimerKind.RECONNECT, None, now + cfg.reconnect_interval))
        elif kind is TimerKind.STATE:
            self._publish_state(now)
        elif kind is TimerKind.PUSH_PULL:
            self._sync_with_random(now, out, full=False)
            self._push_pull_at = now + cfg.push_pull_interval
            out.append(self._timer(TimerKind.PUSH_PULL, None, self._push_pull_at))
        else:  # pragma: no cover - every TimerKind is handled above
            raise LocalProtocolError(f"unknown timer {key!r}")

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
        if len(self._finals) >= _MAX_RELAYS:
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
        if node in self._final_of or len(self._finals) >= _MAX_RELAYS:
            return
        lo, _ = self.cfg.suspicion_bounds(self.table.live + 1)
        at = now + lo / 2
        seq = self._new_final(node, inc, False, [at], at + self.cfg.probe_timeout)
        out.append(self._timer(TimerKind.FINAL, seq, at))
        if len(self._pinged_mid) >= _MAX_SMALL_MAPS:
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

    def _gossip_soon(self, now: float, out: list[Effect]) -> None:
        """Bring the next gossip round forward to now, but never closer than half a gossip
        interval to the previous round (a burst of deaths costs at most twice the usual rate)."""
        at = max(now, self._last_gossip + self.cfg.gossip_interval / 2)
        if at < self._gossip_at:
            self._gossip_at = at
            out.append(self._timer(TimerKind.GOSSIP, None, at))

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

    def _witnesses(self, sender: bytes, p: Packet) -> tuple[Update, ...]:
        """A helper's NACK may carry its witness Suspect of the target: kept aside for our
        probe (applied only if the probe fails), never applied on arrival."""
        pr = self._open.get(p.seq)
        ours = pr is not None and not pr.done and sender in pr.helpers
        rest: list[Update] = []
        for u in p.updates:
            if type(u) is Suspect and u.node == p.target and u.accuser == sender:
                if ours and len(pr.witnesses) < len(pr.helpers):  # type: ignore[union-attr]
                    pr.witnesses.append(u)  # type: ignore[union-attr]
            else:
                rest.append(u)
        return tuple(rest)

    def _probe_succeeded(self, pr: _Probe, now: float) -> None:
        pr.done = True
        self._close_probe(pr)
        self.awareness.apply_delta(-1)
        self._rel(pr.target, now).probed(True, self.cfg.reliability_probe_alpha)

    # -- packets -------------------------------------------------------------------------------

    def _on_packet(self, sender: bytes, p: Packet, now: float, out: list[Effect]) -> None:
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
        if kind is PacketKind.PING:
            first = (self.self_alive,) if push_mine else ()
            self._pushed[sender] = self.incarnation if push_mine else self._pushed.get(sender, -1)
            out.append(
                Send(to=sender, msg=self._packet(PacketKind.ACK, sender, seq=p.seq, first=first))
            )
            push_mine = False
        elif kind is PacketKind.ACK:
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
        elif kind is PacketKind.PING_REQ:
            if p.target and p.target != self.me and p.target != sender:
                if len(self._relays) >= _MAX_RELAYS:
                    self.counters["too_frequent"] += 1
                else:
                    seq = self._next_seq()
                    self._relays[seq] = (sender, p.seq, p.target)
                    pk = self._packet(PacketKind.PING, p.target, seq=seq, target=p.target)
                    out.append(Send(to=p.target, msg=pk))
                    at = now + self.awareness.scale(self.cfg.probe_timeout)
                    out.append(self._timer(TimerKind.RESEND, seq, now + (at - now) / 2))
                    out.append(self._timer(TimerKind.RELAY, seq, at))
        elif kind is PacketKind.NACK:
            pr = self._open.get(p.seq)
            if pr is not None and sender in pr.helpers:
                if sender not in pr.nacked:
                    pr.nacked.add(sender)
                    pr.nacks += 1
                if pr.nacks == len(pr.helpers) and not pr.done:
                    # Every helper is alive and could not reach the target either: the period
                    # has nothing more to learn, so accuse now instead of at its end.
                    self._finish_probe(pr, now, out)
        elif kind is PacketKind.SYNC or kind is PacketKind.SYNC_ACK or kind is PacketKind.SYNC_PAGE:
            self._on_sync(sender, p, out)
            push_mine = push_mine and kind is not PacketKind.SYNC
        if push_mine and self._pushed.get(sender) != self.incarnation:
            if len(self._pushed) >= _MAX_SMALL_MAPS:
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

    # -- updates -------------------------------------------------------------------------------

    def _refute(self, accused_inc: int, *, awareness: bool = True) -> None:
        self.incarnation = max(self.incarnation, accused_inc) + 1
        self.self_alive = self._sign_alive()
        self._queue(self.self_alive)
        self.counters["refutes"] += 1
        if awareness:
            self.awareness.apply_delta(1)

    def _rate_ok(self, node: bytes, now: float) -> bool:
        cfg = self.cfg
        tokens, last = self._budget.get(node, (float(cfg.alive_burst), now))
        tokens = min(float(cfg.alive_burst), tokens + (now - last) / cfg.min_state_interval)
        if tokens < 1.0:
            return False
        if len(self._budget) >= _MAX_SMALL_MAPS:
            self._budget.clear()
        self._budget[node] = (tokens - 1.0, now)
        return True

    def _apply(self, u: Update, now: float, out: list[Effect], *, verified: bool = False) -> None:
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
        if kind is UpdateKind.ALIVE:
            if m is None and len(self.table) >= self.cfg.max_members:
                self.counters["over_capacity"] += 1
                return
            if m is not None and not self._rate_ok(node, now):
                self.counters["too_frequent"] += 1
                return
            since = now if m is None or m.status != _ALIVE else m.since
            self.table.put(Member(node, _ALIVE, u.incarnation, u, since, u, now))  # type: ignore[arg-type]
            self._suspicions.pop(node, None)
            self._gens.pop((TimerKind.SUSPICION, node), None)
            self._dead_since.pop(node, None)
            self._queue(u)
            if m is None:
                change: ChangeKind | None = ChangeKind.JOIN
                if not self._synced:
                    self._synced = True
                    out.append(Send(to=node, msg=self._sync_packet(PacketKind.SYNC, node)))
            elif m.status != _ALIVE:
                change = ChangeKind.RECOVERED
                self._rel(node, now).status(now, True, self.cfg.reliability_half_life)
            elif m.alive.state != u.state:  # type: ignore[union-attr]
                change = ChangeKind.STATE
            else:
                change = None
            if change is not None:
                out.append(
                    MemberChanged(
                        kind=change, node=node, incarnation=u.incarnation, status=_ALIVE, alive=u
                    )
                )  # type: ignore[arg-type]
            return
        assert m is not None  # the table refuses accusations about unknown members
        if nxt == CONFIRM and u.incarnation == m.incarnation:
            s = self._suspicions.get(node)
            if s is not None and s.confirm(u.accuser):  # type: ignore[union-attr]
                self.counters["confirmations"] += 1
                out.append(self._timer(TimerKind.SUSPICION, node, max(now, s.deadline())))
                self._queue(u)
            return
        if nxt in (CONFIRM, _SUSPECT):
            n = self.table.live + 1
            lo, hi = self.cfg.suspicion_bounds(n)
            s = Suspicion(
                accuser=u.accuser,
                incarnation=u.incarnation,  # type: ignore[union-attr]
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
                )  # type: ignore[union-attr]
            return
        # Dead.
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
        )  # type: ignore[union-attr]

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
