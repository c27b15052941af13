"""``MembershipChecker``: reads only ``MemberChanged`` effects, as ``PbftChecker`` reads commits.

It knows the truth (who is crashed, who is cut off by a partition) from the world and compares
every observer's announced beliefs with it:

* safety: a member that never stopped answering and was never cut off must not be declared
  dead (a *false death*); suspicions of such members are counted (false suspicions);
* detection: for each crash, the time until each surviving observer declares the member dead;
* dissemination: for each state change, the time until each live observer has seen it;
* convergence (``wrong()``): pairs (observer, member) whose belief differs from the truth.
"""

from __future__ import annotations

from p2pnode_protocols.heartbeat import ChangeKind, MemberChanged

__all__ = ["MembershipChecker"]


class MembershipChecker:
    def __init__(self, n: int) -> None:
        self.n = n
        self.up = [True] * n
        self.up_since = [0.0] * n
        self.index: dict[bytes, int] = {}
        #: node -> the incarnation its current life started at.
        self.life_inc: dict[int, int] = {}
        #: Accusations of a previous life that land after the restart (correct, but late).
        self.late_detections = 0
        #: node -> time of its current crash (absent while up).
        self.crashed_at: dict[int, float] = {}
        #: node -> observers that currently hold it suspect or dead / dead.
        self.not_alive: dict[int, set[int]] = {}
        self.dead_by: dict[int, set[int]] = {}
        #: Pairs excused from safety while a partition separates them (and a grace after).
        self.excused: set[int] | None = None
        self.false_deaths: list[tuple[float, int, int]] = []
        self.false_suspicions = 0
        self.partition_deaths = 0
        #: (crashed node, crash time) -> {observer: detection delay}.
        self.detections: dict[tuple[int, float], dict[int, float]] = {}
        #: (node, incarnation, time) -> {observer: delay}.
        self.disseminations: dict[tuple[int, int, float], dict[int, float]] = {}
        self._open_states: dict[int, tuple[int, int, float]] = {}

    # -- truth from the world ------------------------------------------------------------------

    def crash(self, node: int, now: float) -> None:
        self.up[node] = False
        self.crashed_at[node] = now
        self.detections[(node, now)] = {}
        self._forget_observer(node)

    def restart(self, node: int, now: float) -> None:
        self.up[node] = True
        self.crashed_at.pop(node, None)
        self.up_since[node] = now
        self._forget_observer(node)  # a fresh view: everyone alive

    def _forget_observer(self, node: int) -> None:
        for s in self.not_alive.values():
            s.discard(node)
        for s in self.dead_by.values():
            s.discard(node)

    def state_changed(self, node: int, incarnation: int, now: float) -> None:
        key = (node, incarnation, now)
        self.disseminations[key] = {}
        self._open_states[node] = key

    # -- effects -------------------------------------------------------------------------------

    def on_change(self, observer: int, subject: int, e: MemberChanged, now: float) -> None:
        kind = e.kind
        if kind is ChangeKind.SUSPECT or kind is ChangeKind.DEAD:
            if e.incarnation < self.life_inc.get(subject, 0):
                # About the life that crashed: the observer has not heard of the restart yet.
                self.late_detections += 1
                self.not_alive.setdefault(subject, set()).add(observer)
                return
            self.not_alive.setdefault(subject, set()).add(observer)
            if kind is ChangeKind.DEAD:
                self.dead_by.setdefault(subject, set()).add(observer)
            crash = self.crashed_at.get(subject)
            if crash is not None:
                # Observers that restarted since the crash never saw it happen.
                if kind is ChangeKind.DEAD and self.up_since[observer] <= crash:
                    self.detections[(subject, crash)].setdefault(observer, now - crash)
                return
            isl = self.excused
            accuser = self.index.get(e.accuser, -1)
            if isl is not None and (
                (subject in isl) != (observer in isl) or accuser in isl or subject in isl
            ):
                # Cut off by the partition, or gossip the island spread after the heal.
                self.partition_deaths += kind is ChangeKind.DEAD
                return
            if kind is ChangeKind.DEAD:
                self.false_deaths.append((now, observer, subject))
            elif accuser == observer:
                self.false_suspicions += 1  # our own probe round failed on a live member
            return
        # join, recovered, state: the observer holds the subject alive.
        s = self.not_alive.get(subject)
        if s is not None:
            s.discard(observer)
        d = self.dead_by.get(subject)
        if d is not None:
            d.discard(observer)
        key = self._open_states.get(subject)
        if key is not None and e.incarnation >= key[1]:
            self.disseminations[key].setdefault(observer, now - key[2])

    # -- convergence ---------------------------------------------------------------------------

    def survivors_of(self, key: tuple[int, float]) -> int:
        """Observers up for the whole time since the crash ``key``, who must detect it."""
        node, crash = key
        return sum(
            1 for o in range(self.n) if self.up[o] and o != node and self.up_since[o] <= crash
        )

    def wrong(self) -> int:
        """Pairs (live observer, member) whose belief differs from the truth."""
        up = self.up
        live = sum(up)
        bad = 0
        for subject, holders in self.not_alive.items():
            if up[subject]:
                bad += sum(1 for o in holders if up[o])
        for subject in self.crashed_at:
            holders = self.dead_by.get(subject, set())
            bad += live - sum(1 for o in holders if up[o])
        return bad
