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


class Pacer:
    """Spreads units (bytes) over time at ``rate`` per second, ``burst`` at once: an upload
    limit that makes callers wait their turn instead of refusing them.

    A token bucket that may go into debt: each reservation takes its units at once and is told
    to wait until the debt is paid off, so concurrent callers are served in call order and
    the long-run rate holds. Sans-time: the caller passes the clock and does the sleeping.
    """

    def __init__(self, *, rate: float, burst: float) -> None:
        if rate <= 0 or burst < 0:
            raise ValueError("rate must be positive and burst not negative")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at: float | None = None

    def reserve(self, units: float, now: float) -> float:
        """Take ``units``; return the seconds to wait before sending them."""
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= units
        return max(0.0, -self._tokens / self.rate)
