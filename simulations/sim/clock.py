"""``SimClock``: virtual time and the event queue of a discrete-event run.

Callbacks run in (time, insertion) order, so a run is a pure function of its seeds. The PBFT
``World`` keeps its own queue (it predates this); new worlds (membership, and consensus as it
moves over) schedule through this one.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

__all__ = ["SimClock"]


class SimClock:
    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.events = 0
        self._queue: list[tuple[float, int, Callable[..., Any], tuple[Any, ...]]] = []
        self._n = 0

    def call_at(self, at: float, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` at virtual time ``at`` (never in the past)."""
        self._n += 1
        heapq.heappush(self._queue, (at if at > self.now else self.now, self._n, fn, args))

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        self.call_at(self.now + delay, fn, *args)

    def run_until(self, t: float, *, max_events: int | None = None) -> bool:
        """Run every callback due up to ``t``; False if ``max_events`` ran out first."""
        q = self._queue
        pop = heapq.heappop
        budget = max_events if max_events is not None else -1
        while q and q[0][0] <= t:
            if budget == 0:
                return False
            budget -= 1
            at, _, fn, args = pop(q)
            self.now = at
            self.events += 1
            fn(*args)
        self.now = max(self.now, t)
        return True

    def pending(self) -> int:
        return len(self._queue)
