"""Near-duplicate pairs (p2pnode.training.redundancy): relative to the round's own spread,
deterministic, and independent of the order of the rows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode.training.redundancy import (
    DUPLICATE_RATIO,
    near_duplicate_pairs,
    pairwise_sq_distances,
)


def _round(seed: int, honest: int = 6, dim: int = 200, twins: int = 2) -> np.ndarray:
    """``honest`` spread-out rows (a shared direction plus each row's own), then ``twins`` rows
    that are one crafted vector plus a little noise each (as two attackers send)."""
    rng = np.random.default_rng(seed)
    common = rng.normal(0, 1, dim)
    rows = [common + rng.normal(0, 1, dim) for _ in range(honest)]
    crafted = common - 0.3 * rng.normal(0, 1, dim)
    rows += [crafted + rng.normal(0, 0.1, dim) for _ in range(twins)]
    return np.stack(rows).astype(np.float32)


def test_the_crafted_twins_are_the_only_pair() -> None:
    stack = _round(0)
    assert near_duplicate_pairs(stack) == [(6, 7)]


def test_alike_rows_of_iid_data_are_not_near_duplicates_of_each_other() -> None:
    """All rows close to one another (IID shards): the reference is their own spread."""
    rng = np.random.default_rng(1)
    common = rng.normal(0, 1, 300)
    stack = np.stack([common + rng.normal(0, 0.05, 300) for _ in range(8)])
    assert near_duplicate_pairs(stack) == []


def test_too_few_rows_have_no_reference_and_identical_rows_always_pair() -> None:
    stack = _round(2)
    assert near_duplicate_pairs(stack[:2]) == []
    same = np.stack([stack[0], stack[0], stack[1], stack[2]])
    assert near_duplicate_pairs(same) == [(0, 1)]
    # Most rows identical (median nearest distance zero): the identical ones pair, no others.
    most = np.stack([stack[0]] * 3 + [stack[1]])
    assert near_duplicate_pairs(most) == [(0, 1), (0, 2), (1, 2)]


def test_distances_are_symmetric_exact_and_the_ratio_is_a_knob() -> None:
    stack = _round(3)
    d = pairwise_sq_distances(stack)
    assert np.array_equal(d, d.T) and np.all(np.diag(d) == 0.0)
    diff = stack[0].astype(np.float64) - stack[1]
    assert d[0, 1] == float(np.sum(diff * diff))
    assert near_duplicate_pairs(stack, ratio=0.0) == []
    assert len(near_duplicate_pairs(stack, ratio=10.0)) == 28
    assert 0.0 < DUPLICATE_RATIO < 1.0


@pytest.mark.timeout(60)
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), perm_seed=st.integers(0, 2**16), twins=st.integers(0, 3))
def test_the_pairs_do_not_depend_on_the_order_of_the_rows(
    seed: int, perm_seed: int, twins: int
) -> None:
    stack = _round(seed, twins=twins)
    perm = np.random.default_rng(perm_seed).permutation(len(stack))
    pairs = {frozenset(p) for p in near_duplicate_pairs(stack)}
    moved = {frozenset(int(perm[i]) for i in p) for p in near_duplicate_pairs(stack[perm])}
    assert moved == pairs
    twin_ids = set(range(6, 6 + twins))
    if twins >= 2:  # the twins pair with each other, and no honest row is in a pair
        assert pairs == {frozenset((a, b)) for a in twin_ids for b in twin_ids if a < b}
