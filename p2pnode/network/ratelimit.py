"""Per-peer token buckets: how much any one peer may make us do."""

from __future__ import annotations


class TokenBuckets:
    """One token bucket per peer: ``rate`` tokens a second, at most ``burst`` saved up.

    Buckets of peers idle long enough to be full again are forgotten, so the table stays as
    small as the set of recently active peers.
    """

    def __init__(self, *, rate: float, burst: float, max_peers: int = 4096) -> None:
        self.rate = rate
        self.burst = burst
        self.max_peers = max_peers
        self._buckets: dict[object, tuple[float, float]] = {}  # peer -> (tokens, at)

    def allow(self, peer: object, now: float) -> bool:
        tokens, at = self._buckets.get(peer, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[peer] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > self.max_peers:
            full_after = self.burst / self.rate
            self._buckets = {
                p: (t, a) for p, (t, a) in self._buckets.items() if now - a < full_after
            }
        return allowed
