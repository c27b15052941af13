"""Lifeguard suspicion (memberlist ``suspicion.go``) without a timer: the machine asks for the
deadline and sets a ``SetTimer`` itself.

A suspicion starts at the maximum timeout and shrinks, on a log scale, toward the minimum as
independent members confirm it
(:func:`~p2pnode_protocols.heartbeat.config.remaining_suspicion_time`). ``confirm`` ignores the
original accuser, repeats, and anything after k confirmations.
"""

from __future__ import annotations

from .config import remaining_suspicion_time

__all__ = ["Suspicion"]


class Suspicion:
    __slots__ = ("_confirmations", "incarnation", "k", "max", "min", "n", "start")

    def __init__(
        self,
        *,
        accuser: bytes,
        incarnation: int,
        k: int,
        min_timeout: float,
        max_timeout: float,
        start: float,
    ) -> None:
        self.incarnation = incarnation
        self.k = k
        self.min = min_timeout
        self.max = max_timeout if k >= 1 else min_timeout
        self.start = start
        self.n = 0
        self._confirmations = {accuser}

    def confirm(self, accuser: bytes) -> bool:
        """Count an independent confirmation; True if it was new information."""
        if self.n >= self.k or accuser in self._confirmations:
            return False
        self._confirmations.add(accuser)
        self.n += 1
        return True

    def deadline(self) -> float:
        """Absolute time at which the suspect is declared dead."""
        return self.start + remaining_suspicion_time(self.n, self.k, 0.0, self.min, self.max)
