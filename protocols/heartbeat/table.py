"""The member table: every member's last known record, with copy-on-write sharing.

A daemon's table starts empty and fills as members join. A simulator with 10,000 nodes cannot
give each node its own 10,000-entry dict (10^8 entries), so a table may be layered over a
shared, read-only :class:`MemberBase` (everyone alive at the start): a node's own dict holds only
the members whose record it has changed since. Reads look there first; members are immutable.

Anti-entropy digests: the table keeps ``buckets`` 64-bit digests, each the XOR of
``entry_hash(node, incarnation, status)`` over the members whose ``bucket_of(node)`` it is,
updated in O(1) on every change. Two tables that hold the same (member, incarnation, status)
triples have equal digests; push-pull compares them and exchanges only differing buckets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .messages import Alive, Update
from .state import MemberStatus

__all__ = [
    "DEFAULT_BUCKETS",
    "Member",
    "MemberBase",
    "MemberTable",
    "bucket_of",
    "entry_hash",
    "ring_position",
]

_MISSING = object()
#: Digest buckets unless a table is told otherwise (``HeartbeatConfig.sync_buckets``).
DEFAULT_BUCKETS = 64


def bucket_of(node: bytes, buckets: int) -> int:
    """The digest bucket of a member: from the id's last bytes (an Ed25519 peer id ends in the
    public key, uniformly distributed; a hash spreads any other id)."""
    if len(node) >= 32:
        return int.from_bytes(node[-4:], "big") % buckets
    return int.from_bytes(hashlib.blake2b(node, digest_size=4).digest(), "big") % buckets


def ring_position(node: bytes) -> int:
    """A member's place on the monitoring ring (64 bits, uniform, the same at every member)."""
    return int.from_bytes(hashlib.blake2b(node, digest_size=8, person=b"p2pnode/ring").digest())


def entry_hash(node: bytes, incarnation: int, status: int) -> int:
    """64-bit hash of one (member, incarnation, status) triple; XORed into its bucket."""
    data = node + incarnation.to_bytes(8, "big") + bytes((status,))
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


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
    #: Local time this record last changed (any new incarnation or status): push-pull sends a
    #: differing bucket's most recently changed records first.
    updated: float = 0.0


class MemberBase:
    """A shared, read-only starting view: these members, all alive."""

    def __init__(
        self, records: Iterable[Alive], now: float = 0.0, *, buckets: int = DEFAULT_BUCKETS
    ) -> None:
        self.members = {
            r.node: Member(r.node, MemberStatus.ALIVE, r.incarnation, r, now, r, now)
            for r in records
        }
        self.ids = list(self.members)
        self.buckets = buckets
        self.digests = [0] * buckets
        self.counts = [len(self.members), 0, 0]
        self.bucket_ids: list[list[bytes]] = [[] for _ in range(buckets)]
        for m in self.members.values():
            b = bucket_of(m.node, buckets)
            self.digests[b] ^= entry_hash(m.node, m.incarnation, m.status)
            self.bucket_ids[b].append(m.node)
        self._ring: list[tuple[int, bytes]] | None = None

    @property
    def ring(self) -> list[tuple[int, bytes]]:
        """Every member as (ring position, id), sorted; built once, on first use."""
        if self._ring is None:
            self._ring = sorted((ring_position(x), x) for x in self.ids)
        return self._ring


class MemberTable:
    def __init__(
        self, me: bytes, base: MemberBase | None = None, *, buckets: int = DEFAULT_BUCKETS
    ) -> None:
        self._base: dict[bytes, Member] = base.members if base is not None else {}
        self._base_obj = base
        self._ring: list[tuple[int, bytes]] = []
        self._ring_n = 0
        self._own: dict[bytes, Member | None] = {}
        self._ids: list[bytes] = base.ids if base is not None else []
        self._ids_shared = base is not None
        self.counts = [0, 0, 0]  # by MemberStatus
        self.buckets = buckets
        #: Ids added beyond the base, by bucket (the base's own lists are shared).
        self._extra_ids: dict[int, list[bytes]] = {}
        self._base_bucket_ids: list[list[bytes]] | None = None
        if base is not None and base.buckets == buckets:
            self.digests = list(base.digests)
            self.counts = list(base.counts)
            self._base_bucket_ids = base.bucket_ids
        else:
            self.digests = [0] * buckets
            for m in self._base.values():
                b = bucket_of(m.node, buckets)
                self.counts[m.status] += 1
                self.digests[b] ^= entry_hash(m.node, m.incarnation, m.status)
                self._extra_ids.setdefault(b, []).append(m.node)
        mine = self._base.get(me)
        if mine is not None:
            self._own[me] = None  # we are not a member of our own table
            self.counts[mine.status] -= 1
            self.digests[bucket_of(me, buckets)] ^= entry_hash(me, mine.incarnation, mine.status)

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
        b = bucket_of(node, self.buckets)
        if old is not None:
            self.counts[old.status] -= 1
            self.digests[b] ^= entry_hash(node, old.incarnation, old.status)
        elif node not in self._base and node not in self._own:
            if self._ids_shared:
                self._ids = list(self._ids)
                self._ids_shared = False
            self._ids.append(node)
            self._extra_ids.setdefault(b, []).append(node)
        self.counts[member.status] += 1
        self.digests[b] ^= entry_hash(node, member.incarnation, member.status)
        self._own[node] = member

    def remove(self, node: bytes) -> None:
        old = self.get(node)
        if old is not None:
            self.counts[old.status] -= 1
            self.digests[bucket_of(node, self.buckets)] ^= entry_hash(
                node, old.incarnation, old.status
            )
            self._own[node] = None

    def ring(self) -> list[tuple[int, bytes]]:
        """Every id held (dead and removed ones too), as (ring position, id) sorted: the base's
        list while no id was added, else our own, rebuilt when ids were added."""
        if self._ids_shared and self._base_obj is not None:
            return self._base_obj.ring
        if self._ring_n != len(self._ids):
            self._ring = sorted((ring_position(x), x) for x in self._ids)
            self._ring_n = len(self._ids)
        return self._ring

    def in_bucket(self, b: int) -> Iterator[Member]:
        """The members held in digest bucket ``b``."""
        if self._base_bucket_ids is not None:
            for node in self._base_bucket_ids[b]:
                m = self.get(node)
                if m is not None:
                    yield m
        for node in self._extra_ids.get(b, ()):
            m = self.get(node)
            if m is not None:
                yield m

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
