"""Data: the 8x8 handwritten digits shipped with the package, loaded without any download.

``data/digits.npz`` holds the 1,797 images of the UCI optdigits test set (CC BY 4.0, see
``data/LICENSE-digits.txt``) as uint8 pixel counts 0..16. :func:`load_digits` scales them to
[0, 1]; :func:`train_test_split` makes a seeded, class-stratified split so every run of a
simulation with the same seed trains and evaluates on the same images.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np

DIGITS_FILE = "digits.npz"
DIGITS_LICENSE_FILE = "LICENSE-digits.txt"


@dataclass(frozen=True, slots=True)
class Dataset:
    """Features ``x`` of shape ``(n, features)`` and int64 labels ``y`` of shape ``(n,)``."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if self.x.ndim != 2 or self.y.shape != (self.x.shape[0],):
            raise ValueError(f"bad dataset shapes: x {self.x.shape}, y {self.y.shape}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def num_features(self) -> int:
        return int(self.x.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.y.max()) + 1 if len(self) else 0

    def subset(self, indices: np.ndarray) -> Dataset:
        return Dataset(self.x[indices], self.y[indices])


def load_digits(dtype: type = np.float32) -> Dataset:
    """The 1,797 digits, pixels scaled to [0, 1], in the file's order."""
    ref = resources.files("p2pnode.training").joinpath("data", DIGITS_FILE)
    with ref.open("rb") as f, np.load(f) as archive:
        images = archive["images"]
        labels = archive["labels"]
    if images.shape != (1797, 64) or labels.shape != (1797,):
        raise ValueError(f"{DIGITS_FILE} is damaged: shapes {images.shape}, {labels.shape}")
    return Dataset(images.astype(dtype) / dtype(16.0), labels.astype(np.int64))


def digits_license() -> str:
    """The attribution and licence text that must travel with the data."""
    ref = resources.files("p2pnode.training").joinpath("data", DIGITS_LICENSE_FILE)
    return ref.read_text(encoding="utf-8")


def train_test_split(
    data: Dataset, test_fraction: float, rng: np.random.Generator
) -> tuple[Dataset, Dataset]:
    """A split stratified by class: each class gives ``round(test_fraction * count)`` to test."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError("test_fraction must lie in (0, 1)")
    test_parts = []
    train_parts = []
    for c in range(data.num_classes):
        idx = np.flatnonzero(data.y == c)
        idx = rng.permutation(idx)
        n_test = round(test_fraction * len(idx))
        test_parts.append(idx[:n_test])
        train_parts.append(idx[n_test:])
    # Sorting then permuting gives an order independent of class but fixed by rng.
    train_idx = rng.permutation(np.sort(np.concatenate(train_parts)))
    test_idx = np.sort(np.concatenate(test_parts))
    return data.subset(train_idx), data.subset(test_idx)
