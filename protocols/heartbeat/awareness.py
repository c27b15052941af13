"""Lifeguard local health (memberlist ``awareness.go``): a node that misses nacks or has to refute
suspicions of itself is probably the slow one, so it stretches its own timeouts instead of
accusing others."""

from __future__ import annotations

__all__ = ["Awareness"]


class Awareness:
    """A score in ``[0, max_multiplier)``; timeouts scale by ``score + 1``."""

    __slots__ = ("max", "score")

    def __init__(self, max_multiplier: int) -> None:
        self.max = max_multiplier
        self.score = 0

    def apply_delta(self, delta: int) -> None:
        self.score = min(max(self.score + delta, 0), self.max - 1)

    def scale(self, timeout: float) -> float:
        return timeout * (self.score + 1)
