"""The order of a ring: which peer sends to which, chosen from measured link costs.

A ring all-reduce moves the same bytes over every link at once, so it runs at the pace of its
slowest link. :func:`ring_order` therefore picks the cyclic order of peers that minimises the
ring's largest edge cost first and the sum of its edge costs second (the latency the ring adds
up). :func:`edge_cost` turns a measured round-trip time and bandwidth into one link's cost for
one part.

How hard it tries depends on the size (all of it deterministic, pure Python, no randomness):

- up to ``exact_up_to`` peers (default 12): exact. The smallest feasible bottleneck is found by
  binary search over the distinct edge costs, each probe a bitset Held-Karp reachability pass;
  then Held-Karp on the edges within that bottleneck minimises the sum.
- up to ``near_up_to`` peers (default 16): nearest-neighbour tours from every start, each
  improved by 2-opt (a bounded number of passes).
- beyond: nearest-neighbour tours from as many starts as a fixed work budget allows.

The result always starts with ``min(peers)``; among equally good rings the one whose peer
sequence is smallest wins, so every member computes the same ring from the same costs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__all__ = [
    "DEFAULT_BANDWIDTH_BPS",
    "DEFAULT_RTT_S",
    "edge_cost",
    "ring_cost",
    "ring_order",
]

#: the round trip assumed for a link never measured: a distant peer, so measured links win
DEFAULT_RTT_S = 0.1
#: the bandwidth (bits per second) assumed for a link never measured: 100 Mbit/s
DEFAULT_BANDWIDTH_BPS = 100e6
#: exact search costs 2**n * n**2 steps: past 16 peers it would take seconds
MAX_EXACT = 16
#: 2-opt passes per tour: each pass is O(n**3) here, and a pass that finds nothing ends it
MAX_TWO_OPT_PASSES = 20
#: edge look-ups the nearest-neighbour starts may spend beyond ``near_up_to`` (about 0.1 s)
NEAREST_BUDGET = 1 << 18

Objective = tuple[float, float]


def edge_cost(rtt_s: float | None, bandwidth_bps: float | None, part_bytes: int) -> float:
    """Seconds for one part of ``part_bytes`` bytes to cross a link: the one-way latency
    (``rtt_s / 2``) plus the transmission time at ``bandwidth_bps`` (bits per second).

    An unknown value (``None``, NaN, infinite, negative; a bandwidth of 0, which the membership
    view reports for "not measured yet") falls back to :data:`DEFAULT_RTT_S` or
    :data:`DEFAULT_BANDWIDTH_BPS`.
    """
    if type(part_bytes) is not int or part_bytes < 0:
        raise ValueError(f"part_bytes must be an int >= 0, not {part_bytes!r}")
    rtt = DEFAULT_RTT_S if rtt_s is None or not math.isfinite(rtt_s) or rtt_s < 0 else rtt_s
    bw = bandwidth_bps
    if bw is None or not math.isfinite(bw) or bw <= 0:
        bw = DEFAULT_BANDWIDTH_BPS
    return rtt / 2 + part_bytes * 8 / bw


def ring_cost(
    order: Sequence[str],
    cost: Mapping[tuple[str, str], float],
    *,
    default_cost: float = 1.0,
) -> tuple[float, float]:
    """``(largest edge, sum of edges)`` of the ring ``order[0] -> order[1] -> ... ->
    order[0]``, with costs looked up as :func:`ring_order` does; ``(0.0, 0.0)`` below 2 peers."""
    _check_cost("default_cost", default_cost)
    n = len(order)
    if n < 2:
        return (0.0, 0.0)
    edges = [_lookup(cost, order[k], order[(k + 1) % n], default_cost) for k in range(n)]
    return (max(edges), math.fsum(edges))


def ring_order(
    peers: Sequence[str],
    cost: Mapping[tuple[str, str], float],
    *,
    default_cost: float = 1.0,
    exact_up_to: int = 12,
    near_up_to: int = 16,
) -> list[str]:
    """A cyclic order of ``peers`` minimising the ring's largest edge cost, then its sum.

    ``cost[(a, b)]`` is the cost of the link ``a -> b``; when only ``(b, a)`` is known it is
    used for both directions, and when neither is, ``default_cost``. Costs must be finite and
    >= 0. The result starts with ``min(peers)``; see the module docstring for the search.
    """
    if any(type(p) is not str for p in peers):
        raise ValueError("peers must be distinct strings")
    ps = sorted(peers)
    if len(set(ps)) != len(ps):
        raise ValueError("peers must be distinct strings")
    _check_cost("default_cost", default_cost)
    for name, v in (("exact_up_to", exact_up_to), ("near_up_to", near_up_to)):
        if type(v) is not int or v < 0:
            raise ValueError(f"{name} must be an int >= 0")
    if exact_up_to > MAX_EXACT:
        raise ValueError(f"exact_up_to must be <= {MAX_EXACT}")
    n = len(ps)
    if n <= 2:
        return ps
    w = [[0.0 if i == j else _lookup(cost, a, b, default_cost) for j, b in enumerate(ps)]
         for i, a in enumerate(ps)]  # fmt: skip
    if n <= exact_up_to:
        tour = _exact(w)
    else:
        starts = n if n <= near_up_to else max(1, min(n, NEAREST_BUDGET // (n * n)))
        tours = [_nearest(w, s) for s in range(starts)]
        if n <= near_up_to:
            tours = [_two_opt(w, t) for t in tours]
        tour = min((_rotate(t) for t in tours), key=lambda t: (_objective(w, t), t))
    return [ps[i] for i in tour]


# -- helpers ----------------------------------------------------------------------------------


def _check_cost(name: str, v: object) -> None:
    if type(v) not in (int, float) or not math.isfinite(v) or v < 0:  # type: ignore[arg-type]
        raise ValueError(f"{name} must be a finite number >= 0, not {v!r}")


def _lookup(cost: Mapping[tuple[str, str], float], a: str, b: str, default: float) -> float:
    v = cost.get((a, b))
    if v is None:
        v = cost.get((b, a), default)
    _check_cost(f"cost[({a!r}, {b!r})]", v)
    return float(v)


def _objective(w: list[list[float]], tour: Sequence[int]) -> Objective:
    n = len(tour)
    edges = [w[tour[k]][tour[(k + 1) % n]] for k in range(n)]
    return (max(edges), math.fsum(edges))


def _better(a: Objective, b: Objective) -> bool:
    """``a`` strictly better than ``b``; sums within rounding noise count as equal, so that
    2-opt cannot cycle on float noise."""
    if a[0] != b[0]:
        return a[0] < b[0]
    return a[1] < b[1] - 1e-12 * max(1.0, abs(b[1]))


def _rotate(tour: list[int]) -> list[int]:
    k = tour.index(0)
    return tour[k:] + tour[:k]


def _bits(x: int) -> list[int]:
    out = []
    while x:
        low = x & -x
        out.append(low.bit_length() - 1)
        x ^= low
    return out


def _feasible(w: list[list[float]], bound: float) -> bool:
    """Is there a Hamiltonian cycle using only edges <= ``bound``? Bitset Held-Karp: nodes
    1..n-1 are bits 0..n-2; ``reach[mask]`` is the set of nodes a path from node 0 through
    exactly ``mask`` can end at."""
    n = len(w)
    m = n - 1
    out = [0] * m
    for v in range(1, n):
        for u in range(1, n):
            if u != v and w[v][u] <= bound:
                out[v - 1] |= 1 << (u - 1)
    reach = [0] * (1 << m)
    for u in range(1, n):
        if w[0][u] <= bound:
            reach[1 << (u - 1)] = 1 << (u - 1)
    full = (1 << m) - 1
    for mask in range(1, full):
        ends = reach[mask]
        if not ends:
            continue
        nxt = 0
        for v in _bits(ends):
            nxt |= out[v]
        for u in _bits(nxt & ~mask):
            reach[mask | (1 << u)] |= 1 << u
    return any(w[v + 1][0] <= bound for v in _bits(reach[full]))


def _exact(w: list[list[float]]) -> list[int]:
    n = len(w)
    values = sorted({w[i][j] for i in range(n) for j in range(n) if i != j})
    # The complete graph is always feasible at the largest cost: search the smallest feasible.
    lo, hi = 0, len(values) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if _feasible(w, values[mid]):
            hi = mid
        else:
            lo = mid + 1
    bound = values[lo]
    m = n - 1
    full = (1 << m) - 1
    inf = math.inf
    allowed = [[u for u in range(m) if u != v and w[v + 1][u + 1] <= bound] for v in range(m)]
    # g[mask][v]: the least sum to finish from node v+1, having visited mask, back to node 0.
    g = [[inf] * m for _ in range(1 << m)]
    for v in range(m):
        if w[v + 1][0] <= bound:
            g[full][v] = w[v + 1][0]
    for mask in range(full - 1, 0, -1):
        row = g[mask]
        for v in _bits(mask):
            wv = w[v + 1]
            best = inf
            for u in allowed[v]:
                if not mask >> u & 1:
                    c = wv[u + 1] + g[mask | (1 << u)][u]
                    if c < best:
                        best = c
            row[v] = best
    # Walk greedily: the lowest-numbered next peer that still completes an optimal ring, so
    # ties go to the smallest sequence (peers are sorted, so index order is peer id order).
    total = min(w[0][u + 1] + g[1 << u][u] for u in range(m) if w[0][u + 1] <= bound)
    tour = [0]
    mask, target, row_w = 0, total, w[0]
    while mask != full:
        eps = 1e-9 * max(1.0, abs(target))
        for u in range(m):
            if mask >> u & 1 or row_w[u + 1] > bound:
                continue
            rest = g[mask | (1 << u)][u]
            if row_w[u + 1] + rest <= target + eps:
                tour.append(u + 1)
                mask |= 1 << u
                target, row_w = rest, w[u + 1]
                break
        else:  # pragma: no cover - g guarantees a continuation
            raise AssertionError("held-karp reconstruction lost the optimum")
    return tour


def _nearest(w: list[list[float]], start: int) -> list[int]:
    n = len(w)
    tour = [start]
    left = set(range(n)) - {start}
    while left:
        row = w[tour[-1]]
        nxt = min(left, key=lambda u: (row[u], u))
        tour.append(nxt)
        left.remove(nxt)
    return tour


def _two_opt(w: list[list[float]], tour: list[int]) -> list[int]:
    """First-improvement 2-opt on the (bottleneck, sum) objective; segment reversal also
    reverses the direction of the links inside it, so each move is scored in full."""
    n = len(tour)
    best = _objective(w, tour)
    for _ in range(MAX_TWO_OPT_PASSES):
        improved = False
        for i in range(1, n - 1):
            for j in range(i + 1, n):
                cand = tour[:i] + tour[i : j + 1][::-1] + tour[j + 1 :]
                obj = _objective(w, cand)
                if _better(obj, best):
                    tour, best, improved = cand, obj, True
        if not improved:
            break
    return tour
