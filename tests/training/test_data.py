"""The shipped digits and the sharding of a training set among clients."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.training.data import digits_license, load_digits, train_test_split
from p2pnode.training.sharding import dirichlet_shards, iid_shards, label_histogram


def test_digits_ship_with_the_package() -> None:
    data = load_digits()
    assert data.x.shape == (1797, 64) and data.y.shape == (1797,)
    assert data.x.dtype == np.float32 and data.x.min() == 0.0 and data.x.max() == 1.0
    # The UCI optdigits test set's class counts.
    counts = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert np.bincount(data.y).tolist() == counts
    text = digits_license()
    assert "CC BY 4.0" in text and "Alpaydin" in text


def test_split_is_stratified_seeded_and_disjoint() -> None:
    data = load_digits()
    train, test = train_test_split(data, 0.2, np.random.default_rng(1))
    assert len(train) + len(test) == 1797
    assert abs(len(test) - 359) <= 5
    per_class = np.bincount(test.y) / np.bincount(data.y)
    assert np.all(np.abs(per_class - 0.2) < 0.01)
    again, _ = train_test_split(data, 0.2, np.random.default_rng(1))
    np.testing.assert_array_equal(train.x, again.x)
    rows = {r.tobytes() for r in train.x}
    overlap = sum(r.tobytes() in rows for r in test.x)
    # Identical images can occur twice in the data set, but only a handful.
    assert overlap < 5


def _is_partition(shards: list[np.ndarray], n: int) -> bool:
    joined = np.sort(np.concatenate(shards))
    return bool(np.array_equal(joined, np.arange(n)))


@given(n=st.integers(10, 500), clients=st.integers(1, 10), seed=st.integers(0, 2**32 - 1))
def test_iid_shards_partition_evenly(n: int, clients: int, seed: int) -> None:
    shards = iid_shards(n, clients, np.random.default_rng(seed))
    assert _is_partition(shards, n)
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1


@given(alpha=st.floats(0.1, 100.0), clients=st.integers(2, 10), seed=st.integers(0, 2**32 - 1))
def test_dirichlet_shards_partition(alpha: float, clients: int, seed: int) -> None:
    labels = load_digits().y
    shards = dirichlet_shards(labels, clients, alpha, np.random.default_rng(seed), min_size=5)
    assert _is_partition(shards, len(labels))
    assert min(len(s) for s in shards) >= 5


def test_small_alpha_skews_labels_large_alpha_does_not() -> None:
    labels = load_digits().y

    def skew(alpha: float) -> float:
        shards = dirichlet_shards(labels, 8, alpha, np.random.default_rng(3))
        hist = label_histogram(labels, shards, 10).astype(float)
        frac = hist / hist.sum(axis=1, keepdims=True)
        return float(np.mean(np.abs(frac - 0.1)))  # distance from uniform class mix

    assert skew(0.1) > 3 * skew(100.0)
    assert skew(100.0) < 0.03


def test_sharding_rejects_bad_arguments() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        dirichlet_shards(np.zeros(20, int), 3, 0.0, rng)
    with pytest.raises(ValueError):
        dirichlet_shards(np.zeros(20, int), 3, 1.0, rng, min_size=10)
    with pytest.raises(ValueError):
        iid_shards(2, 3, rng)
