"""What a Byzantine trainer sends instead of its honest update: the attacks the simulator, the
demo and the tests use to show the robust rules at work. Pure numpy, seeded by the caller.

Two families:

- :func:`corrupt_update` changes the attacker's own update (sign flip, scaling, noise): far from
  the honest updates, which every robust rule finds.
- :func:`craft_update` builds the update from the *honest updates of the round* (an omniscient
  attacker): the attacks that hide inside the honest spread, from the papers that break robust
  aggregation. ALIE (Baruch et al., NeurIPS 2019), IPM (Xie et al., UAI 2019), min-max and
  min-sum (Shejwalkar and Houmansadr, NDSS 2021) and mimic (Karimireddy et al., ICLR 2022).
  Every attacker of a round sends the same crafted vector, as in those papers.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

__all__ = [
    "OMNISCIENT_ATTACKS",
    "UPDATE_ATTACKS",
    "alie_z",
    "corrupt_update",
    "craft_update",
    "mimic_target",
    "min_max_gamma",
]

#: attacks on the update itself (a label flip poisons the data instead, see simulations).
UPDATE_ATTACKS = ("sign_flip", "scaled", "gaussian")
#: attacks that craft the update from the round's honest updates (see :func:`craft_update`).
OMNISCIENT_ATTACKS = ("alie", "ipm", "min_max", "min_sum", "mimic")


def corrupt_update(
    kind: str, honest: np.ndarray, scale: float, rng: np.random.Generator
) -> np.ndarray:
    """``sign_flip``: -scale x the update; ``scaled``: scale x; ``gaussian``: noise as large
    as ``scale`` times the honest update's per-coordinate RMS."""
    if kind == "sign_flip":
        return (-scale * honest).astype(np.float32)
    if kind == "scaled":
        return (scale * honest).astype(np.float32)
    if kind == "gaussian":
        rms = float(np.sqrt(np.mean(honest.astype(np.float64) ** 2)))
        return rng.normal(0.0, scale * max(rms, 1e-8), honest.shape).astype(np.float32)
    raise ValueError(f"unknown attack {kind!r}; known: {', '.join(UPDATE_ATTACKS)}")


def alie_z(n: int, f: int) -> float:
    """ALIE's ``z_max`` for ``n`` workers of which ``f`` are Byzantine (Baruch et al., 2019,
    Algorithm 3): ``s = floor(n/2 + 1) - f`` honest workers must be "won over", and the largest
    deviation that keeps the attacker nearer the mean than them is ``Phi^-1((n - s) / n)``."""
    if not 0 < f < n:
        raise ValueError(f"ALIE needs 0 < f < n, got n={n}, f={f}")
    s = n // 2 + 1 - f
    return NormalDist().inv_cdf((n - s) / n) if s < n else 0.0


def _max_pairwise_sq(stack: np.ndarray) -> np.ndarray:
    """Row i: the squared distances of honest update i to every honest update."""
    sq = np.sum(stack * stack, axis=1)
    d = sq[:, None] + sq[None, :] - 2.0 * (stack @ stack.T)
    return np.maximum(d, 0.0)


def _sq_dists_to(stack: np.ndarray, v: np.ndarray) -> np.ndarray:
    diff = stack - v[None, :]
    return np.sum(diff * diff, axis=1)


def min_max_gamma(
    stack: np.ndarray, deviation: np.ndarray, objective: str, tol: float = 1e-5
) -> float:
    """The largest ``gamma`` (to ``tol``) with ``mean - gamma * deviation`` no farther from the
    honest updates than they are from each other, found by the halving search of Shejwalkar and
    Houmansadr (NDSS 2021, their ``our_attack_mkrum``/``our_attack_trmean`` code; start 10):

    - ``min_max``: its largest distance to an honest update <= the largest honest pairwise one;
    - ``min_sum``: its sum of squared distances <= the largest such sum of an honest update.
    """
    mean = stack.mean(axis=0)
    pair = _max_pairwise_sq(stack)
    bound = float(pair.max()) if objective == "min_max" else float(pair.sum(axis=1).max())
    gamma, step, good = 10.0, 10.0, 0.0
    while abs(good - gamma) > tol:
        d = _sq_dists_to(stack, mean - gamma * deviation)
        value = float(d.max()) if objective == "min_max" else float(d.sum())
        if value <= bound:
            good = gamma
            gamma += step / 2
        else:
            gamma -= step / 2
        step /= 2
    return good


def mimic_target(stack: np.ndarray) -> int:
    """The honest update mimic copies: the one farthest from the honest mean (ties to the
    first), which over-weights the most unusual client's data. Karimireddy et al. pick it by
    the top principal direction of the honest spread; with a handful of clients the farthest
    update is that direction's extreme in practice, and needs no eigen-solver."""
    d = _sq_dists_to(stack, stack.mean(axis=0))
    return int(np.argmax(d))


def craft_update(
    kind: str, honest: np.ndarray, n: int, f: int, eps: float = 0.5, z: float | None = None
) -> np.ndarray:
    """The update every attacker sends, from the honest updates of the round (rows of
    ``honest``, any order), ``n`` inputs in all of which ``f`` are attackers.

    ``alie``: ``mean - z * std`` per coordinate (``z`` defaults to :func:`alie_z`);
    ``ipm``: ``-eps * mean``; ``min_max``/``min_sum``: ``mean - gamma * std`` with gamma from
    :func:`min_max_gamma`; ``mimic``: a copy of :func:`mimic_target`'s update. Computed in
    float64, returned as float32. With one honest row the spread is zero: ALIE and the min-
    attacks then send that row (they have nothing to hide in), IPM still flips it.
    """
    if honest.ndim != 2 or honest.shape[0] < 1:
        raise ValueError("craft_update needs a (k, d) array of honest updates, k >= 1")
    stack = honest.astype(np.float64)
    mean = stack.mean(axis=0)
    std = stack.std(axis=0)
    if kind == "alie":
        out = mean - (alie_z(n, f) if z is None else z) * std
    elif kind == "ipm":
        out = -eps * mean
    elif kind in ("min_max", "min_sum"):
        out = mean - min_max_gamma(stack, std, kind) * std
    elif kind == "mimic":
        out = stack[mimic_target(stack)]
    else:
        raise ValueError(f"unknown attack {kind!r}; known: {', '.join(OMNISCIENT_ATTACKS)}")
    return out.astype(np.float32)
