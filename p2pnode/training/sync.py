"""Sync policies: when a round closes and how much a late update counts, as pure logic.

No clocks and no timers: the caller passes ``now`` (seconds on whatever clock the service or the
simulator uses) and what has arrived, and gets a decision back. The daemon's training service and
the simulator drive the same functions.

- :class:`BSP` (bulk synchronous): a round waits for its participants until a deadline. At the
  deadline a ``drop`` policy aggregates whoever arrived (if at least ``min_updates``); a ``wait``
  policy keeps waiting for the stragglers up to ``max_wait`` past the deadline, then drops them.
- :class:`SSP` (stale synchronous parallel, Ho et al., 2013): a worker may run ahead of the
  slowest by at most ``staleness_bound`` rounds; an update computed on a model older than that
  is refused.
- :class:`BoundedAsync` (asynchronous with bounded delay, FedAsync, Xie et al., 2019): every
  update is applied on arrival, mixed in with weight ``alpha * s(staleness)``, and refused past
  ``max_staleness``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np


class Straggler(enum.Enum):
    #: aggregate what arrived by the deadline.
    DROP = "drop"
    #: keep waiting past the deadline, at most ``max_wait``.
    WAIT = "wait"


class Action(enum.Enum):
    WAIT = "wait"
    AGGREGATE = "aggregate"
    #: too few updates by the last moment: the round fails and is retried or abandoned.
    ABORT = "abort"


@dataclass(frozen=True, slots=True)
class BspDecision:
    action: Action
    #: participants whose updates go into the aggregate (sorted).
    included: tuple[str, ...]
    #: participants left out as stragglers (sorted).
    dropped: tuple[str, ...]
    #: when to ask again if ``action`` is WAIT, else None.
    next_check: float | None


@dataclass(frozen=True, slots=True)
class BSP:
    """Bulk synchronous rounds with a deadline and a straggler policy."""

    deadline: float
    straggler: Straggler = Straggler.DROP
    min_updates: int = 1
    max_wait: float = 0.0

    def __post_init__(self) -> None:
        if not self.deadline > 0 or self.max_wait < 0 or self.min_updates < 1:
            raise ValueError("need deadline > 0, max_wait >= 0, min_updates >= 1")

    def decide(
        self,
        round_start: float,
        now: float,
        expected: Iterable[str],
        received: Iterable[str],
    ) -> BspDecision:
        """What to do at ``now`` for a round that opened at ``round_start``."""
        exp = set(expected)
        got = set(received) & exp  # updates from non-participants never count
        missing = tuple(sorted(exp - got))
        due = round_start + self.deadline
        last = due + (self.max_wait if self.straggler is Straggler.WAIT else 0.0)
        if not missing:
            return BspDecision(Action.AGGREGATE, tuple(sorted(got)), (), None)
        if now < due:
            return BspDecision(Action.WAIT, tuple(sorted(got)), (), due)
        if now < last:
            return BspDecision(Action.WAIT, tuple(sorted(got)), (), last)
        if len(got) < self.min_updates:
            return BspDecision(Action.ABORT, (), tuple(sorted(exp)), None)
        return BspDecision(Action.AGGREGATE, tuple(sorted(got)), missing, None)


@dataclass(frozen=True, slots=True)
class SSP:
    """Stale synchronous parallel: a bounded gap between the fastest and slowest worker."""

    staleness_bound: int

    def __post_init__(self) -> None:
        if self.staleness_bound < 0:
            raise ValueError("staleness_bound must be >= 0")

    def can_advance(self, worker: str, clocks: Mapping[str, int]) -> bool:
        """May ``worker`` start its next round (clock + 1) without outrunning the bound?"""
        if worker not in clocks:
            raise KeyError(f"unknown worker {worker!r}")
        # SSP's rule: a worker at clock c proceeds while c - min(clocks) <= s (s=0 is BSP).
        return clocks[worker] - min(clocks.values()) <= self.staleness_bound

    def accepts(self, update_round: int, current_round: int) -> bool:
        """Is an update computed on the model of ``update_round`` still usable now?"""
        if update_round > current_round:
            return False  # from the future: a bug or a lie
        return current_round - update_round <= self.staleness_bound

    def blocked(self, clocks: Mapping[str, int]) -> tuple[str, ...]:
        """Workers that must wait for the slowest before advancing (sorted)."""
        return tuple(sorted(w for w in clocks if not self.can_advance(w, clocks)))


class Weighting(enum.Enum):
    CONSTANT = "constant"
    #: ``(1 + staleness) ** -a``
    POLYNOMIAL = "polynomial"
    #: 1 up to ``b``, then ``1 / (a * (staleness - b) + 1)``
    HINGE = "hinge"


@dataclass(frozen=True, slots=True)
class BoundedAsync:
    """Asynchronous updates with bounded delay, down-weighted by staleness (FedAsync)."""

    max_staleness: int
    alpha: float = 0.6
    weighting: Weighting = Weighting.POLYNOMIAL
    a: float = 0.5
    b: int = 4

    def __post_init__(self) -> None:
        if self.max_staleness < 0 or not 0 < self.alpha <= 1 or self.a < 0 or self.b < 0:
            raise ValueError("need max_staleness >= 0, 0 < alpha <= 1, a >= 0, b >= 0")

    def staleness_factor(self, staleness: int) -> float:
        """``s(staleness)`` in [0, 1]; 0 past ``max_staleness`` (the update is refused)."""
        if staleness < 0:
            raise ValueError("staleness must be >= 0")
        if staleness > self.max_staleness:
            return 0.0
        if self.weighting is Weighting.CONSTANT:
            return 1.0
        if self.weighting is Weighting.POLYNOMIAL:
            return float((1.0 + staleness) ** -self.a)
        if staleness <= self.b:
            return 1.0
        return 1.0 / (self.a * (staleness - self.b) + 1.0)

    def mixing_weight(self, model_version: int, update_version: int) -> float:
        """The weight of an update trained on ``update_version`` when the server is at
        ``model_version``."""
        if update_version > model_version:
            raise ValueError("an update cannot be newer than the model it is applied to")
        return self.alpha * self.staleness_factor(model_version - update_version)

    def apply(
        self,
        params: np.ndarray,
        client_params: np.ndarray,
        model_version: int,
        update_version: int,
    ) -> tuple[np.ndarray, bool]:
        """``(1 - w) * params + w * client_params``; returns the new vector and whether the
        update was used (False past the bound, when ``params`` come back unchanged)."""
        w = self.mixing_weight(model_version, update_version)
        if w == 0.0:
            return params, False
        mixed = (1.0 - w) * params.astype(np.float64) + w * client_params.astype(np.float64)
        return mixed.astype(params.dtype), True
