"""What a Byzantine trainer sends instead of its honest update: the attacks the simulator, the
demo and the tests use to show the robust rules at work. Pure numpy, seeded by the caller."""

from __future__ import annotations

import numpy as np

__all__ = ["UPDATE_ATTACKS", "corrupt_update"]

#: attacks on the update itself (a label flip poisons the data instead, see simulations).
UPDATE_ATTACKS = ("sign_flip", "scaled", "gaussian")


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
