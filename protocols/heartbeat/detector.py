"""The failure detector's two signals, as pure arithmetic.

* :class:`PhiAccrual` (Hayashibara et al., 2004): from the inter-arrival times of a member's
  messages, ``phi = -log10(P(a gap this long | history))`` under a normal model. SWIM decides
  death by probes and suspicion; phi only says *whom to probe next*: a member we used to hear
  from regularly and have not heard from lately is probed before the round-robin order reaches
  it. It is also the ``suspicion`` figure shown by ``p2pnode members``.
* :class:`Reliability`: an exponentially weighted history of a member's availability (time
  alive, decayed with a half-life) and of our probes it missed; later issues feed task outcomes
  into it.
"""

from __future__ import annotations

import math

__all__ = ["PhiAccrual", "Reliability"]


class PhiAccrual:
    """Exponentially weighted mean and variance of inter-arrival times (no window to store)."""

    __slots__ = ("alpha", "count", "last", "last_probed", "mean", "min_std", "var")

    def __init__(self, now: float, *, alpha: float = 0.1, min_std: float = 0.1) -> None:
        self.last = now
        self.mean = 0.0
        self.var = 0.0
        self.count = 0
        self.alpha = alpha
        self.min_std = min_std
        self.last_probed = -math.inf

    def heard(self, now: float) -> None:
        gap = now - self.last
        self.last = now
        if gap <= 0:
            return
        if self.count == 0:
            self.mean, self.var = gap, (gap / 4) ** 2
        else:
            d = gap - self.mean
            self.mean += self.alpha * d
            self.var = (1 - self.alpha) * (self.var + self.alpha * d * d)
        self.count += 1

    def phi(self, now: float) -> float:
        """0 until two arrivals are known; grows without bound as the silence lengthens."""
        if self.count < 2:
            return 0.0
        std = max(math.sqrt(self.var), self.min_std, self.mean / 10)
        z = (now - self.last - self.mean) / std
        p_later = 0.5 * math.erfc(z / math.sqrt(2))  # P(gap > elapsed)
        if p_later <= 1e-300:
            return 300.0
        return -math.log10(p_later)


class Reliability:
    """Per-member reliability in [0, 1]: the mean of the components observed so far."""

    __slots__ = ("_status_alive", "_t", "availability", "probe", "task")

    def __init__(self, now: float, alive: bool) -> None:
        self.availability = 1.0 if alive else 0.0
        self.probe: float | None = None
        self.task: float | None = None
        self._t = now
        self._status_alive = alive

    def _advance(self, now: float, half_life: float) -> None:
        dt = now - self._t
        if dt > 0:
            keep = 0.5 ** (dt / half_life)
            target = 1.0 if self._status_alive else 0.0
            self.availability = self.availability * keep + target * (1 - keep)
            self._t = now

    def status(self, now: float, alive: bool, half_life: float) -> None:
        self._advance(now, half_life)
        self._status_alive = alive

    def probed(self, ok: bool, alpha: float) -> None:
        x = 1.0 if ok else 0.0
        self.probe = x if self.probe is None else self.probe + alpha * (x - self.probe)

    def task_outcome(self, ok: bool, alpha: float = 0.1) -> None:
        x = 1.0 if ok else 0.0
        self.task = x if self.task is None else self.task + alpha * (x - self.task)

    def score(self, now: float, half_life: float) -> float:
        self._advance(now, half_life)
        parts = [self.availability]
        if self.probe is not None:
            parts.append(self.probe)
        if self.task is not None:
            parts.append(self.task)
        return sum(parts) / len(parts)
