"""Sharding: how a training set is split among clients.

:func:`iid_shards` deals shuffled samples round-robin, so shard sizes differ by at most one.
:func:`dirichlet_shards` is the usual non-IID benchmark split (Hsu et al., 2019): for each class,
a Dirichlet(alpha) draw decides which fraction of that class each client gets. Small alpha gives
clients few classes each; large alpha approaches IID. All randomness comes from the Generator
passed in, so a seed fixes the split.
"""

from __future__ import annotations

import numpy as np


def iid_shards(num_samples: int, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Index arrays, one per client, of a uniformly shuffled split."""
    if num_clients < 1 or num_samples < num_clients:
        raise ValueError("need at least one client and one sample per client")
    order = rng.permutation(num_samples)
    return [np.sort(order[i::num_clients]) for i in range(num_clients)]


def dirichlet_shards(
    labels: np.ndarray,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
    min_size: int = 10,
    max_tries: int = 100,
) -> list[np.ndarray]:
    """Index arrays, one per client, with per-class proportions drawn from Dirichlet(alpha).

    A draw that leaves some client with fewer than ``min_size`` samples is redrawn (a client with
    nothing to train on would stall a round); after ``max_tries`` draws it gives up loudly.
    """
    if num_clients < 1:
        raise ValueError("need at least one client")
    if not alpha > 0.0:
        raise ValueError("alpha must be positive")
    labels = np.asarray(labels)
    if num_clients * min_size > labels.shape[0]:
        raise ValueError("not enough samples for min_size per client")
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            proportions = rng.dirichlet(np.full(num_clients, alpha))
            # Cut points from the cumulative proportions; the last client takes the remainder.
            cuts = (np.cumsum(proportions)[:-1] * len(idx)).astype(np.int64)
            for client, chunk in enumerate(np.split(idx, cuts)):
                parts[client].append(chunk)
        shards = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(s) for s in shards) >= min_size:
            return shards
    raise RuntimeError(f"no Dirichlet({alpha}) split gave every client {min_size} samples")


def label_histogram(labels: np.ndarray, shards: list[np.ndarray], num_classes: int) -> np.ndarray:
    """Counts of shape ``(clients, classes)``: how skewed a split is, for reports."""
    return np.stack([np.bincount(labels[s], minlength=num_classes) for s in shards])
