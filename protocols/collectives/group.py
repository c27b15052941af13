"""The group machine: how peers asking for the same group name form it, and re-form it.

One :class:`GroupMachine` per daemon keeps every group this node asked for. It speaks the
shared vocabulary of :mod:`p2pnode_protocols.machine`, so the daemon runs it on the
:class:`~p2pnode.machine_driver.MachineDriver` and tests feed it events directly.

**Forming.** A node that asks for group G learns of the other peers asking (``CandidatesFound``:
the service looks them up in the DHT) and sends each of them a :class:`~.control.Join` every
tick. The *leader* is the smallest peer id among the live candidates and itself: the leader
collects joins and, once it has ``size`` of them (or ``min_size`` after ``wait``), sends
:class:`~.control.Formed` (a generation number and the members in rank order) to every member.
Everyone agrees on the leader once the DHT has told everyone of everyone, so a group of peers
that start together forms once, with one generation.

**A formed group** has a leader too: the smallest member not suspected. A peer that joins a
formed group is pointed to the leader (:class:`~.control.Redirect`) and admitted with a new
generation, up to ``size``; beyond it the leader answers :class:`~.control.Refused`.

**Re-forming.** When an operation fails (a member died, stalled or sent a bad part), the member
that saw it sends :class:`~.control.Abort` to the others and every survivor joins again
(``Join.generation``: the generation that broke); so does every member that membership reports
dead, by name, (``PeerGone``). The leader forms the next generation from the members that
rejoin: once all the old members not suspected have, or ``reform_wait`` after the first rejoin.
A new generation always has a higher number; of two Formed with the same number the one from
the smaller leader wins, so members never disagree on a generation's member list for long.

Notifications: :class:`GroupFormed` (a generation this node is a member of), :class:`GroupBroken`
(the current generation can no longer run operations: fail what is in flight),
:class:`GroupRefused` (the leader will not admit us).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from p2pnode_protocols.machine import (
    Effect,
    Event,
    LocalProtocolError,
    MessageReceived,
    Notify,
    Send,
    SetTimer,
    TimerFired,
)

from .control import Abort, Formed, Join, Leave, Redirect, Refused, check_group_name
from .topology import ring_order

__all__ = [
    "CandidatesFound",
    "GroupBroken",
    "GroupConfig",
    "GroupFormed",
    "GroupMachine",
    "GroupRefused",
    "JoinGroup",
    "LeaveGroup",
    "LinksMeasured",
    "OpFailed",
    "PeerGone",
    "measured_order",
]

# -- inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinGroup(Event):
    """This node asks for ``name``: ``size`` members (0: no fixed size), or at least
    ``min_size`` once ``wait`` seconds passed (and then up to ``size``). ``min_size`` 0 means
    ``size``."""

    name: str
    size: int = 0
    min_size: int = 0
    wait: float = 0.0

    def __post_init__(self) -> None:
        check_group_name(self.name)
        if not self.min_size:
            object.__setattr__(self, "min_size", self.size)
        if self.size < 0 or self.min_size < 1 or self.wait < 0:
            raise LocalProtocolError("size >= 0, min_size >= 1 (or a size), wait >= 0")
        if self.size and self.min_size > self.size:
            raise LocalProtocolError("min_size above size")


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaveGroup(Event):
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CandidatesFound(Event):
    """Peers the DHT says asked for ``name`` (this node may be among them)."""

    name: str
    peers: frozenset[bytes]


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerGone(Event):
    """Membership declared ``peer`` dead (or its connection is gone for good)."""

    peer: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class OpFailed(Event):
    """An operation of ``generation`` failed here; ``suspects`` are the members blamed."""

    name: str
    generation: int
    op: int
    reason: str
    suspects: frozenset[bytes] = frozenset()


@dataclass(frozen=True, slots=True, kw_only=True)
class LinksMeasured(Event):
    """Round trips (ms) from this node to peers, as membership measures them."""

    rtt_ms: Mapping[bytes, float]


# -- notifications ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupFormed(Notify):
    name: str
    generation: int
    members: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupBroken(Notify):
    """The generation can run no new operation. ``departed`` names the members whose leaving
    or death broke it: an operation already running that needs nothing more from them (and
    owes them nothing) may still finish, as its result includes every part of every member.
    Empty ``departed`` (an abort, a re-formation): what is running fails."""

    name: str
    generation: int
    reason: str
    departed: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupRefused(Notify):
    name: str
    reason: str


# -- the machine ------------------------------------------------------------------------------

Order = Callable[[Sequence[bytes], Mapping[tuple[bytes, bytes], float]], list[bytes]]


def measured_order(
    peers: Sequence[bytes], cost: Mapping[tuple[bytes, bytes], float]
) -> list[bytes]:
    """The ring (rank order) with the cheapest slowest link, then the cheapest sum, from the
    members' measured round trips (:func:`~.topology.ring_order`: exact up to 12 members, 2-opt
    up to 16, greedy beyond); a link nobody measured costs the mean of those measured."""
    name = {p: p.hex() for p in peers}
    back = {v: k for k, v in name.items()}
    known = {(name[a], name[b]): v for (a, b), v in cost.items() if a in name and b in name}
    default = sum(known.values()) / len(known) if known else 1.0
    return [back[h] for h in ring_order(list(name.values()), known, default_cost=default)]


@dataclass(frozen=True, slots=True)
class GroupConfig:
    tick: float = 0.25  # seconds between joins resent and conditions checked
    reform_wait: float = 2.0  # seconds a re-forming leader waits for the old members
    heard_for: float = 1.5  # a peer counts for leadership this long after its last join
    order: Order = measured_order  # the rank order of a new generation's members


@dataclass(slots=True)
class _Group:
    name: str
    size: int
    min_size: int
    wait: float
    asked_at: float
    formed: bool = False
    generation: int = 0
    members: tuple[bytes, ...] = ()
    previous: tuple[bytes, ...] = ()  # the members of the generation being re-formed
    candidates: set[bytes] = field(default_factory=set)
    suspects: set[bytes] = field(default_factory=set)
    joiners: dict[bytes, Join] = field(default_factory=dict)
    first_join: float | None = None
    redirect: bytes | None = None
    heard: dict[bytes, float] = field(default_factory=dict)  # peer -> when its last join came
    departed: dict[bytes, int] = field(default_factory=dict)  # peer -> the generation it left
    broken_at: float | None = None
    highest_seen: int = 0  # the highest generation any join or formed named


class GroupMachine:
    def __init__(self, me: bytes, config: GroupConfig | None = None) -> None:
        self.me = me
        self.config = config or GroupConfig()
        self.groups: dict[str, _Group] = {}
        self.rtt_ms: dict[bytes, float] = {}
        self._dispatch: dict[type, Callable[[object, float], list[Effect]]] = {
            JoinGroup: self._on_join_group,  # type: ignore[dict-item]
            LeaveGroup: self._on_leave_group,  # type: ignore[dict-item]
            CandidatesFound: self._on_candidates,  # type: ignore[dict-item]
            PeerGone: self._on_peer_gone,  # type: ignore[dict-item]
            OpFailed: self._on_op_failed,  # type: ignore[dict-item]
            LinksMeasured: self._on_links,  # type: ignore[dict-item]
            MessageReceived: self._on_message,  # type: ignore[dict-item]
            TimerFired: self._on_timer,  # type: ignore[dict-item]
        }

    def handle(self, event: Event, now: float) -> list[Effect]:
        handler = self._dispatch.get(type(event))
        if handler is None:
            raise LocalProtocolError(f"the group machine takes no {type(event).__name__}")
        return handler(event, now)

    def leader(self, g: _Group, now: float) -> bytes:
        """The peer this node takes as the group's leader now: the smallest of the members (a
        formed group), else of the peers heard asking lately and the old members still waited
        for (re-forming), unless a member pointed us to its group's leader."""
        if g.formed:
            pool = set(g.members) - g.suspects
        else:
            if g.redirect is not None and g.redirect not in g.suspects:
                return g.redirect
            fresh = now - self.config.heard_for
            pool = {p for p, t in g.heard.items() if t >= fresh}
            if g.broken_at is not None and now - g.broken_at < self.config.reform_wait:
                pool |= set(g.previous)
            pool -= g.suspects
        pool.add(self.me)
        return min(pool)

    # -- local requests ------------------------------------------------------------------------

    def _on_join_group(self, e: JoinGroup, now: float) -> list[Effect]:
        g = self.groups.get(e.name)
        if g is not None:
            return []  # already asked for: the service answers from the current state
        self.groups[e.name] = _Group(e.name, e.size, e.min_size, e.wait, asked_at=now)
        return self._tick(self.groups[e.name], now)

    def _on_leave_group(self, e: LeaveGroup, now: float) -> list[Effect]:
        g = self.groups.pop(e.name, None)
        if g is None or not g.formed:
            return []
        leave = Leave(g.name, g.generation)
        return [Send(to=p, msg=leave) for p in g.members if p != self.me]

    def _on_candidates(self, e: CandidatesFound, now: float) -> list[Effect]:
        g = self.groups.get(e.name)
        if g is None:
            return []
        g.candidates |= e.peers - {self.me}
        return []

    def _on_links(self, e: LinksMeasured, now: float) -> list[Effect]:
        self.rtt_ms = dict(e.rtt_ms)
        return []

    def _on_peer_gone(self, e: PeerGone, now: float) -> list[Effect]:
        out: list[Effect] = []
        for g in self.groups.values():
            g.candidates.discard(e.peer)
            g.joiners.pop(e.peer, None)
            if g.formed and e.peer in g.members:
                g.suspects.add(e.peer)
                # Tell the others, so the whole group re-forms, not just the members whose
                # membership saw the death first (or at all: a verdict may be false).
                reason = f"member {e.peer.hex()[:16]} is gone"
                abort = Abort(g.name, g.generation, 0, reason, (e.peer,))
                out += [Send(to=p, msg=abort) for p in g.members if p not in (self.me, e.peer)]
                out += self._break(g, now, reason, (e.peer,))
            elif e.peer in g.previous:
                g.suspects.add(e.peer)
        return out

    def _on_op_failed(self, e: OpFailed, now: float) -> list[Effect]:
        g = self.groups.get(e.name)
        if g is None or not g.formed or g.generation != e.generation:
            return []
        g.suspects |= e.suspects - {self.me}
        abort = Abort(g.name, g.generation, e.op, e.reason[:256], tuple(sorted(e.suspects)))
        out: list[Effect] = [
            Send(to=p, msg=abort) for p in g.members if p != self.me and p not in g.suspects
        ]
        return out + self._break(g, now, e.reason)

    # -- messages ------------------------------------------------------------------------------

    def _on_message(self, e: MessageReceived, now: float) -> list[Effect]:
        m, sender = e.msg, e.sender
        g = self.groups.get(getattr(m, "group", ""))
        if g is None:
            if isinstance(m, Join):
                return []  # we are not in it; the joiner asks the others too
            return []
        if isinstance(m, Join):
            return self._on_join(g, sender, m, now)
        if isinstance(m, Formed):
            return self._on_formed(g, sender, m, now)
        if isinstance(m, Redirect):
            if not g.formed and m.leader != self.me:
                g.redirect = m.leader
                g.candidates.add(m.leader)
            return []
        if isinstance(m, Abort):
            if g.formed and m.generation == g.generation and sender in g.members:
                g.suspects |= set(m.suspects) - {self.me}
                return self._break(g, now, f"aborted by {sender.hex()[:16]}: {m.reason}")
            return []
        if isinstance(m, Refused):
            if not g.formed:
                return [GroupRefused(name=g.name, reason=m.reason)]
            return []
        if isinstance(m, Leave):
            g.candidates.discard(sender)
            g.heard.pop(sender, None)
            g.departed[sender] = max(m.generation, g.departed.get(sender, 0))
            if g.formed and m.generation == g.generation and sender in g.members:
                g.suspects.add(sender)
                return self._break(g, now, f"member {sender.hex()[:16]} left", (sender,))
            return []
        return []

    def _on_join(self, g: _Group, sender: bytes, m: Join, now: float) -> list[Effect]:
        g.suspects.discard(sender)
        g.heard[sender] = now
        g.departed.pop(sender, None)
        g.candidates.add(sender)
        g.highest_seen = max(g.highest_seen, m.generation)
        if g.formed:
            leader = self.leader(g, now)
            if leader != self.me:
                return [Send(to=sender, msg=Redirect(g.name, leader))]
            if sender in g.members:
                if m.generation < g.generation:
                    # A member that missed our Formed: tell it again.
                    return [Send(to=sender, msg=Formed(g.name, g.generation, g.members))]
                # The member's operation failed: this generation is over for everyone.
                out = self._break(g, now, f"member {sender.hex()[:16]} re-forms the group")
                g.joiners[sender] = m
                return out + self._maybe_form(g, now)
            cap = g.size or 256
            if len(g.members) >= cap:
                return [Send(to=sender, msg=Refused(g.name, f"group {g.name} is full ({cap})"))]
            # A late joiner: admit it with a new generation at once.
            members = [*g.members, sender]
            return self._form(g, members, now)
        if self.leader(g, now) == self.me:
            g.joiners[sender] = m
            if g.first_join is None:
                g.first_join = now
            return self._maybe_form(g, now)
        return []

    def _on_formed(self, g: _Group, sender: bytes, m: Formed, now: float) -> list[Effect]:
        g.highest_seen = max(g.highest_seen, m.generation)
        if self.me not in m.members:
            return []
        if any(g.departed.get(p, -1) >= m.generation for p in m.members):
            return []  # a generation a member has left already (a late or resent Formed)
        newer = m.generation > g.generation
        tie = (
            m.generation == g.generation
            and m.members != g.members
            and sender < (min(g.members) if g.members else self.me)
        )
        if not (newer or tie):
            return []
        out: list[Effect] = []
        if g.formed and g.generation != m.generation:
            out.append(GroupBroken(name=g.name, generation=g.generation, reason="re-formed"))
        self._install(g, m.generation, m.members)
        return [*out, GroupFormed(name=g.name, generation=g.generation, members=g.members)]

    # -- timers --------------------------------------------------------------------------------

    def _on_timer(self, e: TimerFired, now: float) -> list[Effect]:
        key = e.key
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] == "tick"):
            return []
        g = self.groups.get(key[1])
        if g is None:
            return []
        return self._tick(g, now)

    def _tick(self, g: _Group, now: float) -> list[Effect]:
        out: list[Effect] = [
            SetTimer(key=("tick", g.name), at=now + self.config.tick, generation=0)
        ]
        if g.formed:
            return out
        leader = self.leader(g, now)
        if leader == self.me:
            g.joiners[self.me] = self._join_msg(g)
            if g.first_join is None:
                g.first_join = now
            out += self._maybe_form(g, now)
            if g.formed:
                return out
        join = self._join_msg(g)
        targets = {leader} if g.redirect is not None else (g.candidates | set(g.previous))
        out += [Send(to=p, msg=join) for p in sorted(targets - g.suspects - {self.me})]
        return out

    # -- forming -------------------------------------------------------------------------------

    def _join_msg(self, g: _Group) -> Join:
        return Join(
            g.name,
            g.size,
            g.min_size,
            int(g.wait * 1000),
            g.generation,
            {p: round(v, 3) for p, v in self.rtt_ms.items()},
        )

    def _maybe_form(self, g: _Group, now: float) -> list[Effect]:
        if g.formed or self.leader(g, now) != self.me:
            return []
        g.joiners[self.me] = self._join_msg(g)
        fresh = now - self.config.heard_for
        joined = sorted(
            p
            for p in g.joiners
            if p not in g.suspects and (p == self.me or g.heard.get(p, -1e18) >= fresh)
        )
        if g.previous:
            waiting = set(g.previous) - g.suspects - set(joined)
            since = g.broken_at if g.broken_at is not None else g.first_join
            late = since is not None and now - since >= self.config.reform_wait
            if waiting and not late:
                return []
            # Old members first, then anyone else who asked, up to the size.
            chosen = [p for p in g.previous if p in joined]
            chosen += [p for p in joined if p not in chosen]
            return self._form(g, chosen[: g.size or 256], now)
        cap = g.size or 256
        if len(joined) >= cap:
            return self._form(g, joined[:cap], now)
        if len(joined) >= g.min_size and now - g.asked_at >= g.wait:
            return self._form(g, joined, now)  # the minimum, once the wait is over
        return []

    def _form(self, g: _Group, members: Sequence[bytes], now: float) -> list[Effect]:
        cost: dict[tuple[bytes, bytes], float] = {}
        for a, join in g.joiners.items():
            for b, rtt in join.rtt_ms.items():
                cost[(a, b)] = rtt
        for b, rtt in self.rtt_ms.items():
            cost[(self.me, b)] = rtt
        ordered = tuple(self.config.order(list(members), cost))
        generation = max(g.generation, g.highest_seen) + 1
        formed = Formed(g.name, generation, ordered)
        out: list[Effect] = []
        if g.formed:
            out.append(GroupBroken(name=g.name, generation=g.generation, reason="re-formed"))
        self._install(g, generation, ordered)
        out += [Send(to=p, msg=formed) for p in ordered if p != self.me]
        out.append(GroupFormed(name=g.name, generation=generation, members=ordered))
        return out

    def _install(self, g: _Group, generation: int, members: tuple[bytes, ...]) -> None:
        g.formed = True
        g.generation = generation
        g.highest_seen = max(g.highest_seen, generation)
        g.members = members
        g.previous = ()
        g.joiners.clear()
        g.first_join = None
        g.redirect = None
        g.broken_at = None
        g.suspects -= set(members)

    def _break(
        self, g: _Group, now: float, reason: str, departed: tuple[bytes, ...] = ()
    ) -> list[Effect]:
        """The current generation is over: re-form from its members (as :meth:`_tick` does)."""
        if not g.formed:
            return []
        broken = GroupBroken(name=g.name, generation=g.generation, reason=reason, departed=departed)
        g.formed = False
        g.previous = g.members
        g.members = ()
        g.joiners.clear()
        g.first_join = None
        g.redirect = None
        g.broken_at = now
        return [broken]
