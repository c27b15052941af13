"""``SimNetwork``: lossy, jittery links between numbered nodes, with partitions.

A send is delivered after ``delay_min + Exp(mean = delay_mean)`` seconds (jitter reorders
packets) unless it is lost (probability ``loss``) or crosses a partition. Every random draw comes
from the network's own ``random.Random`` (a sub-seed of the world's), so a seed replays exactly.
Per-node counters of packets and bytes sent feed the cost figures.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from .clock import SimClock

__all__ = ["SimNetwork"]


class SimNetwork:
    def __init__(
        self,
        clock: SimClock,
        rng: random.Random,
        deliver: Callable[[int, int, Any], None],
        *,
        n: int,
        loss: float = 0.0,
        delay_min: float = 0.0005,
        delay_mean: float = 0.002,
    ) -> None:
        self.clock = clock
        self.rng = rng
        self.deliver = deliver
        self.loss = loss
        self.delay_min = delay_min
        self.delay_mean = delay_mean
        #: node -> group while a partition holds; nodes in different groups cannot talk.
        self.groups: list[int] | None = None
        self.sent = [0] * n
        self.bytes_sent = [0] * n
        self.dropped = 0
        self.cut = 0

    def partition(self, groups: list[int]) -> None:
        self.groups = groups

    def heal(self) -> None:
        self.groups = None

    def reset_counters(self) -> None:
        n = len(self.sent)
        self.sent, self.bytes_sent = [0] * n, [0] * n

    def send(self, src: int, dst: int, payload: Any, size: int) -> None:
        self.sent[src] += 1
        self.bytes_sent[src] += size
        g = self.groups
        if g is not None and g[src] != g[dst]:
            self.cut += 1
            return
        rng = self.rng
        if self.loss and rng.random() < self.loss:
            self.dropped += 1
            return
        delay = self.delay_min + rng.expovariate(1.0 / self.delay_mean)
        self.clock.call_at(self.clock.now + delay, self.deliver, dst, src, payload)
