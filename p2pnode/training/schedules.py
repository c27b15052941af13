"""Learning-rate schedules: pure functions of the step number (0-based).

A schedule is any callable ``step -> lr``. :class:`Warmup` wraps another schedule with a linear
ramp, so "warmup then cosine" is ``Warmup(Cosine(...), warmup_steps=...)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

Schedule = Callable[[int], float]


def _check_step(step: int) -> None:
    if step < 0:
        raise ValueError("step must be >= 0")


@dataclass(frozen=True, slots=True)
class Constant:
    lr: float

    def __call__(self, step: int) -> float:
        _check_step(step)
        return self.lr


@dataclass(frozen=True, slots=True)
class Cosine:
    """Half a cosine from ``lr`` at step 0 down to ``min_lr`` at ``total_steps``, then flat."""

    lr: float
    total_steps: int
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ValueError("total_steps must be >= 1")

    def __call__(self, step: int) -> float:
        _check_step(step)
        t = min(step, self.total_steps) / self.total_steps
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + math.cos(math.pi * t))


@dataclass(frozen=True, slots=True)
class Warmup:
    """Linear ramp from ``inner(0) / warmup_steps`` to ``inner``'s value over ``warmup_steps``;
    afterwards ``inner`` runs on, its own step counted from the end of the warmup."""

    inner: Schedule
    warmup_steps: int

    def __post_init__(self) -> None:
        if self.warmup_steps < 0:
            raise ValueError("warmup_steps must be >= 0")

    def __call__(self, step: int) -> float:
        _check_step(step)
        if step < self.warmup_steps:
            return self.inner(0) * (step + 1) / self.warmup_steps
        return self.inner(step - self.warmup_steps)


def make_schedule(name: str, lr: float, total_steps: int, warmup_steps: int = 0) -> Schedule:
    """``constant`` or ``cosine``, optionally behind a linear warmup."""
    if name == "constant":
        inner: Schedule = Constant(lr)
    elif name == "cosine":
        inner = Cosine(lr, max(1, total_steps - warmup_steps))
    else:
        raise ValueError(f"unknown schedule {name!r}; known: constant, cosine")
    return Warmup(inner, warmup_steps) if warmup_steps else inner
