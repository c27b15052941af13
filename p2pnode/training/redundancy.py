"""Near-duplicate updates: pairs of a round's updates far closer to each other than updates from
distinct data are.

Trainers on distinct shards do not send nearly the same update: on the digits with Dirichlet(0.5)
shards an honest update's distance to its nearest other update is at least 0.45 of the round's
median such distance (benchmarks/attacker_scores.py, 20 rounds, seeds 0-4; 0.55 on a clean
swarm), mostly near 1. Attackers that craft their update from the round's honest updates (ALIE,
IPM, min-max, min-sum: Baruch et al. 2019, Xie et al. 2019, Shejwalkar and Houmansadr 2021) all
send (nearly) the same vector, and a mimic sends a copy of one honest update: the demo's node
attackers, each recomputing with its own seed, are at 0.1-0.4 in most rounds. FoolsGold (Fung,
Yoon and Beschastnikh, RAID 2020) rests on the same observation and down-weights clients too
similar to another; here the similarity only *selects* the updates that the validators re-run
(p2pnode/rounds/compute.py): an honest update recomputes bit for bit and keeps its place and its
score whatever it resembles, one that does not is flagged.

The distance is relative to the round itself (the median of the nearest-neighbour distances), so
IID shards, whose honest updates are all alike, are not all near-duplicates of each other; it
needs the colluders to be fewer than half the updates, which every robust rule needs too.

**Determinism.** Rows in the caller's (canonical) order, float64 squared distances by numpy's
pairwise sum (no BLAS, as :func:`p2pnode.training.aggregation.sq_norm`). The result does not
depend on the order of the rows beyond their indices (a property test checks it).
"""

from __future__ import annotations

import numpy as np

__all__ = ["DUPLICATE_RATIO", "near_duplicate_pairs", "pairwise_sq_distances"]

#: a pair is a near-duplicate below this share of the median nearest-neighbour distance.
DUPLICATE_RATIO = 0.55


def pairwise_sq_distances(stack: np.ndarray) -> np.ndarray:
    """``d[i, j] = |row_i - row_j|^2`` in float64, each by numpy's pairwise sum (symmetric, exact
    zeros on the diagonal): the same bits for a pair whatever the other rows are."""
    rows = np.asarray(stack, dtype=np.float64)
    n = rows.shape[0]
    d = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        for j in range(i + 1, n):
            diff = rows[i] - rows[j]
            d[i, j] = d[j, i] = float(np.sum(diff * diff))
    return d


def near_duplicate_pairs(
    stack: np.ndarray, ratio: float = DUPLICATE_RATIO
) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, of rows closer than ``ratio`` times the median over rows of
    each row's nearest-neighbour distance (sorted). Fewer than 3 rows have no reference: none.
    A median of zero (most rows identical) makes every identical pair a near-duplicate."""
    n = int(np.asarray(stack).shape[0])
    if n < 3:
        return []
    d = np.sqrt(pairwise_sq_distances(stack))  # sqrt is correctly rounded: the same bits anywhere
    nearest = np.array([min(d[i, j] for j in range(n) if j != i) for i in range(n)])
    ref = float(np.median(nearest)) * ratio
    return [(i, j) for i in range(n) for j in range(i + 1, n) if d[i, j] < ref or d[i, j] == 0.0]
