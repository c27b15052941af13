"""What a node concludes about its own reachability from dial-back answers.

Each server's latest verdict counts once ("reached me" or "did not"), verdicts older than
``ttl`` are forgotten, and at most ``max_servers`` are kept (the oldest go first). The status
is PUBLIC once ``confirmations`` servers reached us, PRIVATE once that many did not; with fewer
verdicts it stays where it was, unless the caller says no other server is left to ask: then the
verdicts at hand decide (more reached: public, else private), because a small swarm may never
have ``confirmations`` servers. A private guess is the safe one: it costs a relay reservation,
while a wrong public one leaves the node unreachable.

Pure: time comes in as ``now``; nothing here dials or sleeps.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Reachability(enum.Enum):
    UNKNOWN = "unknown"  #: no conclusion yet
    PUBLIC = "public"  #: peers can dial this node directly
    PRIVATE = "private"  #: peers cannot (a NAT or firewall): it needs a relay


@dataclass(frozen=True, slots=True)
class Verdict:
    server: str
    reached: bool
    at: float


class ReachabilityTracker:
    """Verdicts per server, and the status they add up to."""

    def __init__(self, *, confirmations: int, ttl: float, max_servers: int = 16) -> None:
        if confirmations < 1 or ttl <= 0 or max_servers < confirmations:
            raise ValueError("need confirmations >= 1, ttl > 0, max_servers >= confirmations")
        self.confirmations = confirmations
        self.ttl = ttl
        self.max_servers = max_servers
        self.status = Reachability.UNKNOWN
        self._verdicts: dict[str, Verdict] = {}

    def verdicts(self, now: float) -> list[Verdict]:
        """The verdicts still counted, oldest first."""
        self._expire(now)
        return sorted(self._verdicts.values(), key=lambda v: v.at)

    def record(self, server: str, reached: bool, now: float) -> Reachability:
        """Count ``server``'s answer (replacing its earlier one); return the status."""
        self._verdicts.pop(server, None)
        self._verdicts[server] = Verdict(server, reached, now)
        self._expire(now)
        while len(self._verdicts) > self.max_servers:
            oldest = min(self._verdicts.values(), key=lambda v: v.at)
            del self._verdicts[oldest.server]
        return self._decide(exhausted=False)

    def conclude(self, now: float) -> Reachability:
        """No other server is left to ask: let the verdicts at hand decide."""
        self._expire(now)
        return self._decide(exhausted=True)

    def due(
        self, candidates: list[str], now: float, *, older_than: float | None = None
    ) -> list[str]:
        """The candidates without a counted verdict (or, with ``older_than``, with one at
        least that old), in the order given: whom to ask next."""
        self._expire(now)
        return [
            c
            for c in candidates
            if c not in self._verdicts
            or (older_than is not None and now - self._verdicts[c].at >= older_than)
        ]

    def _expire(self, now: float) -> None:
        stale = [s for s, v in self._verdicts.items() if now - v.at > self.ttl]
        for s in stale:
            del self._verdicts[s]

    def _decide(self, *, exhausted: bool) -> Reachability:
        reached = sum(1 for v in self._verdicts.values() if v.reached)
        missed = len(self._verdicts) - reached
        if reached >= self.confirmations and reached > missed:
            self.status = Reachability.PUBLIC
        elif missed >= self.confirmations and missed >= reached:
            self.status = Reachability.PRIVATE
        elif exhausted and self._verdicts:
            self.status = Reachability.PUBLIC if reached > missed else Reachability.PRIVATE
        elif not self._verdicts:
            self.status = Reachability.UNKNOWN
        return self.status


__all__ = ["Reachability", "ReachabilityTracker", "Verdict"]
