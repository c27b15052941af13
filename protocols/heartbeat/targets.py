"""Whom to probe next: urgent members, phi accrual, the member ring and the round robin.

Each period's probe goes, in this order of preference, to a member the transport just lost
(``PeerDisconnected``), to the member whose phi (Hayashibara's accrual detector) is highest
above ``phi_threshold`` (at most once per two periods), to our successor on the member ring
every ``ring_probe_every`` periods (Rapid's monitoring ring), else to the next member of a
round robin over a fresh pseudo-random permutation per pass (SWIM's time-bounded completeness).
With ``ring_probe_every`` 1 the round robin gets its own probe every ``round_robin_every``
periods (:meth:`ProbeTargets._round_robin_due`).
"""

from __future__ import annotations

import bisect
import math

from .core import MachineCore
from .state import MemberStatus
from .table import ring_position

__all__ = ["ProbeTargets"]

_ALIVE, _SUSPECT, _DEAD = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD


class ProbeTargets(MachineCore):
    """Choosing probe targets (the probe cycle itself is :class:`.probing.Probing`)."""

    def _init_targets(self) -> None:
        #: Members the transport lost while a probe was open: probed next, in order.
        self._urgent: list[bytes] = []
        #: The round robin's current pass: size, position, offset and stride.
        self._order_n = 0
        self._order_pos = 0
        self._order_off = 0
        self._order_stride = 1
        self._probes = 0
        self._periods = 0
        self._ring_pos = ring_position(self.me)
        #: The ring we last looked at (the table's, replaced on change) and our place in it.
        self._ring_ref: list[tuple[int, bytes]] | None = None
        self._ring_at = 0

    def _pick_target(self, now: float) -> bytes | None:
        while self._urgent:
            x = self._urgent.pop(0)
            m = self.table.get(x)
            if m is not None and m.status != _DEAD:
                return x
        # The phi accrual detector: a member gone unusually quiet is probed first, at most once
        # per two periods so the round robin (time-bounded completeness) keeps its pace.
        worst, worst_phi = None, self.cfg.phi_threshold
        gap = 2 * self.cfg.probe_interval
        for x, d in self._phi.items():
            if now - d.last_probed > gap:
                p = d.phi(now)
                if p > worst_phi:
                    m = self.table.get(x)
                    if m is not None and m.status != _DEAD:
                        worst, worst_phi = x, p
        if worst is not None:
            self.counters["phi_probes"] += 1
            return worst
        self._probes += 1
        k = self.cfg.ring_probe_every
        if k and self._probes % k == 0:
            x = self._ring_successor()
            if x is not None:
                return x
        return self._next_in_order()

    def _next_in_order(self) -> bytes | None:
        """Round robin over a fresh pseudo-random permutation per pass (an affine map with a
        stride coprime to the pass size): every member is probed once per pass, in O(1) memory."""
        ids = self.table.ids
        for _ in range(len(ids) + 1):
            if self._order_pos >= self._order_n:
                n = len(ids)
                if n == 0:
                    return None
                stride = 1
                for _ in range(32):
                    s = self._rng.randrange(1, n) if n > 2 else 1
                    if math.gcd(s, n) == 1:
                        stride = s
                        break
                self._order_n, self._order_pos = n, 0
                self._order_off, self._order_stride = self._rng.randrange(n), stride
            idx = (self._order_off + self._order_pos * self._order_stride) % self._order_n
            self._order_pos += 1
            x = ids[idx]
            m = self.table.get(x)
            if m is not None and m.status != _DEAD:
                return x
        return None

    def _round_robin_due(self) -> bool:
        """With the ring taking every period: is this period's round-robin probe due? (Counted
        in periods, whatever the period's own probe went to: urgent and phi probes too.)"""
        self._periods += 1
        return self.cfg.ring_probe_every == 1 and self._periods % self.cfg.round_robin_every == 0

    def _ring_successor(self) -> bytes | None:
        """The first member after us on the ring that we hold alive (else the first we do not
        hold dead). A suspect successor is skipped: it is being checked already, and if it did
        crash, the member after it may have crashed with it (correlated failures) and would
        otherwise wait for the suspect's death before its first probe."""
        ring = self.table.ring()
        n = len(ring)
        if ring is not self._ring_ref:
            self._ring_ref = ring
            self._ring_at = bisect.bisect_right(ring, (self._ring_pos, self.me))
        suspect = None
        for k in range(n):
            x = ring[(self._ring_at + k) % n][1]
            if x == self.me:
                continue
            m = self.table.get(x)
            if m is not None:
                if m.status == _ALIVE:
                    return x
                if m.status == _SUSPECT and suspect is None:
                    suspect = x
        return suspect
