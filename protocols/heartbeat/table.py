"""The member table: every member's last known record, with copy-on-write sharing.

A daemon's table starts empty and fills as members join. A simulator with 10,000 nodes cannot
give each node its own 10,000-entry dict (10^8 entries), so a table may be layered over a
shared, read-only :class:`MemberBase` (everyone alive at the start): a node's own dict holds only
the members whose record it has changed since. Reads look there first; members are immutable.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .messages import Alive, Update
from .state import MemberStatus

__all__ = ["Member", "MemberBase", "MemberTable"]

_MISSING = object()


@dataclass(frozen=True, slots=True)
class Member:
    node: bytes
    status: MemberStatus
    incarnation: int
    #: The member's newest alive record we hold (its node state).
    alive: Alive
    #: Local time of the last status change.
    since: float
    #: The signed record behind the current status (the alive record, or the accusation), as
    #: handed on in push-pull pages.
    last: Update


class MemberBase:
    """A shared, read-only starting view: these members, all alive."""

    def __init__(self, records: Iterable[Alive], now: float = 0.0) -> None:
        self.members = {
            r.node: Member(r.node, MemberStatus.ALIVE, r.incarnation, r, now, r) for r in records
        }
        self.ids = list(self.members)


class MemberTable:
    def __init__(self, me: bytes, base: MemberBase | None = None) -> None:
        self._base: dict[bytes, Member] = base.members if base is not None else {}
        self._own: dict[bytes, Member | None] = {}
        self._ids: list[bytes] = base.ids if base is not None else []
        self._ids_shared = base is not None
        self.counts = [0, 0, 0]  # by MemberStatus
        for m in self._base.values():
            if m.node != me:
                self.counts[m.status] += 1
        if me in self._base:
            self._own[me] = None  # we are not a member of our own table

    @property
    def ids(self) -> list[bytes]:
        """Every id ever held, in insertion order (entries may since have been removed)."""
        return self._ids

    def get(self, node: bytes) -> Member | None:
        m = self._own.get(node, _MISSING)
        if m is _MISSING:
            return self._base.get(node)
        return m  # type: ignore[return-value]

    def put(self, member: Member) -> None:
        node = member.node
        old = self.get(node)
        if old is not None:
            self.counts[old.status] -= 1
        elif node not in self._base and node not in self._own:
            if self._ids_shared:
                self._ids = list(self._ids)
                self._ids_shared = False
            self._ids.append(node)
        self.counts[member.status] += 1
        self._own[node] = member

    def remove(self, node: bytes) -> None:
        old = self.get(node)
        if old is not None:
            self.counts[old.status] -= 1
            self._own[node] = None

    def __len__(self) -> int:
        return sum(self.counts)

    @property
    def live(self) -> int:
        """Members alive or suspect."""
        return self.counts[MemberStatus.ALIVE] + self.counts[MemberStatus.SUSPECT]

    def __iter__(self) -> Iterator[Member]:
        for node in self._ids:
            m = self.get(node)
            if m is not None:
                yield m
