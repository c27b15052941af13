"""memberlist's ``TransmitLimitedQueue``: what rides piggyback on every packet.

Each queued item is about one member. A new item about a member replaces the queued one
(``Invalidates``: only the newest news about a member is worth spreading). ``take`` fills a
packet least-sent first (newest first among equals; items queued ``urgent`` before the rest,
so a death is not held back behind routine news), counts a transmission for each item taken
and drops items that reached the retransmit limit. The queue itself is bounded: past
``max_items`` the most-sent items are dropped first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["BroadcastQueue"]

T = TypeVar("T")


class _Item(Generic[T]):
    __slots__ = ("id", "key", "size", "transmits", "urgent", "value")

    def __init__(self, key: bytes, value: T, size: int, id: int, urgent: bool = False) -> None:
        self.key = key
        self.urgent = urgent
        self.value = value
        self.size = size
        self.transmits = 0
        self.id = id


class BroadcastQueue(Generic[T]):
    def __init__(self, *, max_items: int = 1024) -> None:
        self._items: dict[bytes, _Item[T]] = {}
        self._ids = 0
        self.max_items = max_items
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def queue(self, key: bytes, value: T, size: int, *, urgent: bool = False) -> None:
        self._ids += 1
        self._items.pop(key, None)  # invalidates older news about the same member
        self._items[key] = _Item(key, value, size, self._ids, urgent)
        if len(self._items) > self.max_items:
            worst = max(self._items.values(), key=lambda i: (i.transmits, -i.id))
            del self._items[worst.key]
            self.dropped += 1

    def take(
        self,
        limit: int,
        retransmits: int,
        *,
        first: Callable[[bytes], bool] | None = None,
        per_item_overhead: int = 0,
    ) -> list[T]:
        """Items fitting in ``limit`` bytes, least-sent first (items ``first`` selects lead, then
        urgent ones)."""
        if not self._items:
            return []
        ordered = sorted(
            self._items.values(),
            key=lambda i: (not first(i.key) if first else False, not i.urgent, i.transmits, -i.id),
        )
        out: list[T] = []
        used = 0
        for item in ordered:
            cost = item.size + per_item_overhead
            if used + cost > limit:
                continue
            used += cost
            out.append(item.value)
            item.transmits += 1
            if item.transmits >= retransmits:
                del self._items[item.key]
        return out

    def get(self, key: bytes) -> T | None:
        item = self._items.get(key)
        return None if item is None else item.value

    def transmits(self, key: bytes) -> int | None:
        item = self._items.get(key)
        return None if item is None else item.transmits
