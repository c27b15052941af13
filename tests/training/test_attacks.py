"""The omniscient attacks: each one's defining property, on small honest sets."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode.training.attacks import (
    OMNISCIENT_ATTACKS,
    alie_z,
    craft_update,
    mimic_target,
    min_max_gamma,
)


def honest(k: int = 6, d: int = 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(0.5, 1.0, (k, d))).astype(np.float32)


def test_alie_z_matches_the_paper() -> None:
    # Baruch et al.: n=50, f=12 gives s=14, Phi^-1(36/50) ~ 0.58 (their Table: z = 0.58 ... 1.0)
    assert alie_z(50, 12) == pytest.approx(0.5828, abs=1e-3)
    # 8 clients, 2 attackers: s = 3, Phi^-1(5/8)
    assert alie_z(8, 2) == pytest.approx(0.3186, abs=1e-3)
    with pytest.raises(ValueError):
        alie_z(8, 0)


def test_alie_is_mean_minus_z_std() -> None:
    h = honest()
    out = craft_update("alie", h, 8, 2)
    h64 = h.astype(np.float64)
    want = h64.mean(0) - alie_z(8, 2) * h64.std(0)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("eps", [0.1, 0.5, 4.0])
def test_ipm_has_negative_inner_product_with_the_mean(eps: float) -> None:
    h = honest()
    out = craft_update("ipm", h, 8, 2, eps=eps).astype(np.float64)
    mean = h.astype(np.float64).mean(0)
    np.testing.assert_allclose(out, -eps * mean, rtol=1e-6)
    assert float(np.sum(out * mean)) < 0


@pytest.mark.parametrize("kind", ["min_max", "min_sum"])
def test_min_attacks_stay_within_the_honest_spread_at_the_largest_gamma(kind: str) -> None:
    h = honest().astype(np.float64)
    std = h.std(0)
    gamma = min_max_gamma(h, std, kind)
    assert gamma > 0

    def value(g: float) -> float:
        d = np.sum((h - (h.mean(0) - g * std)) ** 2, axis=1)
        return float(d.max() if kind == "min_max" else d.sum())

    pair = np.array([[np.sum((a - b) ** 2) for b in h] for a in h])
    bound = pair.max() if kind == "min_max" else pair.sum(1).max()
    assert value(gamma) <= bound  # hidden
    assert value(gamma + 1e-3) > bound or value(gamma * 1.01) > bound  # and as far as it can go
    out = craft_update(kind, h.astype(np.float32), 8, 2)
    np.testing.assert_allclose(out, h.mean(0) - gamma * std, rtol=1e-5, atol=1e-6)


def test_mimic_copies_the_most_unusual_honest_update() -> None:
    h = honest()
    h[3] += 5.0
    assert mimic_target(h) == 3
    np.testing.assert_array_equal(craft_update("mimic", h, 8, 2), h[3])


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(OMNISCIENT_ATTACKS), st.integers(1, 7), st.integers(0, 1000))
def test_crafting_is_deterministic_and_finite(kind: str, k: int, seed: int) -> None:
    h = honest(k, 20, seed)
    a = craft_update(kind, h, 8, 1)
    b = craft_update(kind, h.copy(), 8, 1)
    assert a.tobytes() == b.tobytes()
    assert a.shape == (20,) and np.isfinite(a).all()


def test_unknown_attack_and_bad_input_are_refused() -> None:
    with pytest.raises(ValueError):
        craft_update("nope", honest(), 8, 2)
    with pytest.raises(ValueError):
        craft_update("alie", np.zeros(5, np.float32), 8, 2)
