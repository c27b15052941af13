"""Ring order: exact search matches brute force over every permutation (objective, and with
integer costs the exact tie-broken ring); a planted cheap ring is found; large groups finish in
time; edge costs fall back sanely."""

from __future__ import annotations

import itertools
import math
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode_protocols.collectives import edge_cost, ring_cost, ring_order
from p2pnode_protocols.collectives.topology import DEFAULT_BANDWIDTH_BPS, DEFAULT_RTT_S

pytestmark = pytest.mark.timeout(60)

Costs = dict[tuple[str, str], float]


def _peers(n: int) -> list[str]:
    return [f"peer-{i:02d}" for i in range(n)]


def _brute(peers: list[str], cost: Costs, default: float = 1.0) -> list[str]:
    """The smallest-sequence ring among those with the least (bottleneck, sum)."""
    if len(peers) < 3:
        return sorted(peers)
    first, *rest = sorted(peers)
    best: tuple[tuple[float, float], list[str]] | None = None
    for perm in itertools.permutations(rest):
        order = [first, *perm]
        key = (ring_cost(order, cost, default_cost=default), order)
        if best is None or key < best:
            best = key
    assert best is not None
    return best[1]


@st.composite
def cost_tables(draw: st.DrawFn, values: st.SearchStrategy[float]) -> tuple[list[str], Costs]:
    n = draw(st.integers(0, 7))
    peers = _peers(n)
    cost: Costs = {}
    for a, b in itertools.permutations(peers, 2):
        # some links unknown, some known one way only, some asymmetric
        if draw(st.integers(0, 3)):
            cost[(a, b)] = draw(values)
    return draw(st.permutations(peers)), cost


@settings(max_examples=60)
@given(table=cost_tables(st.floats(0.0, 10.0, allow_nan=False)))
def test_exact_objective_equals_brute_force(table: tuple[list[str], Costs]) -> None:
    peers, cost = table
    got = ring_order(peers, cost)
    assert sorted(got) == sorted(peers)
    if peers:
        assert got[0] == min(peers)
    want = ring_cost(_brute(peers, cost), cost)
    have = ring_cost(got, cost)
    assert have[0] == want[0]
    assert math.isclose(have[1], want[1], rel_tol=1e-9, abs_tol=1e-12)


@settings(max_examples=60)
@given(table=cost_tables(st.integers(0, 4).map(float)))
def test_exact_ties_break_to_the_smallest_sequence(table: tuple[list[str], Costs]) -> None:
    # integer costs: sums are exact, so the tie-broken ring itself must match
    peers, cost = table
    assert ring_order(peers, cost) == _brute(peers, cost)


def test_known_one_way_costs_count_both_ways() -> None:
    a, b, c, d = "a", "b", "c", "d"
    # a-c and b-d are expensive; a ring avoiding both exists (a b c d)
    cost = {(a, c): 9.0, (b, d): 9.0, (a, b): 1.0, (c, b): 1.0, (c, d): 1.0, (d, a): 1.0}
    got = ring_order([d, c, b, a], cost)
    assert got in (["a", "b", "c", "d"], ["a", "d", "c", "b"])
    assert got == ["a", "b", "c", "d"]  # the smaller sequence of the two directions


def test_direction_matters_when_costs_are_asymmetric() -> None:
    cost = {("a", "b"): 1.0, ("b", "c"): 1.0, ("c", "a"): 1.0}
    cost |= {("b", "a"): 5.0, ("c", "b"): 5.0, ("a", "c"): 5.0}
    assert ring_order(["a", "b", "c"], cost) == ["a", "b", "c"]
    flipped = {(y, x): v for (x, y), v in cost.items()}
    assert ring_order(["a", "b", "c"], flipped) == ["a", "c", "b"]


def test_bottleneck_comes_before_the_sum() -> None:
    cost = {
        ("a", "b"): 0.1,
        ("b", "c"): 0.1,
        ("c", "d"): 0.1,
        ("d", "a"): 3.0,
        ("a", "c"): 2.0,
        ("b", "d"): 2.0,
    }
    # ring a b c d: max 3.0, sum 3.3 (the least sum); ring a b d c: max 2.0, sum 4.2; ring
    # a c b d: max 3.0. The slowest link decides: a b d c.
    assert ring_order(list("abcd"), cost) == ["a", "b", "d", "c"]


@settings(max_examples=40)
@given(
    table=cost_tables(st.floats(0.0, 10.0, allow_nan=False)),
    near_up_to=st.sampled_from([0, 16]),
)
def test_heuristics_return_valid_rings_no_better_than_optimal(
    table: tuple[list[str], Costs], near_up_to: int
) -> None:
    # exact_up_to=0 forces the 2-opt path (near_up_to=16) or plain nearest-neighbour (0)
    peers, cost = table
    got = ring_order(peers, cost, exact_up_to=0, near_up_to=near_up_to)
    assert sorted(got) == sorted(peers)
    if peers:
        assert got[0] == min(peers)
    best = ring_cost(_brute(peers, cost), cost)
    have = ring_cost(got, cost)
    assert have[0] >= best[0]
    assert have[1] >= best[1] - 1e-9 or have[0] > best[0]


def test_small_and_degenerate_groups() -> None:
    assert ring_order([], {}) == []
    assert ring_order(["x"], {}) == ["x"]
    assert ring_order(["y", "x"], {("x", "y"): 3.0}) == ["x", "y"]


@pytest.mark.parametrize("n", [12])
def test_planted_cheap_ring_is_found(n: int) -> None:
    rnd = random.Random(12)
    peers = _peers(n)
    planted = peers[:]
    rnd.shuffle(planted)
    cost = {(a, b): rnd.uniform(1.0, 2.0) for a, b in itertools.permutations(peers, 2)}
    for k in range(n):
        a, b = planted[k], planted[(k + 1) % n]
        cost[(a, b)] = cost[(b, a)] = 0.1
    got = ring_order(peers, cost)
    assert ring_cost(got, cost) == pytest.approx((0.1, 0.1 * n))
    edges = {frozenset((got[k], got[(k + 1) % n])) for k in range(n)}
    assert edges == {frozenset((planted[k], planted[(k + 1) % n])) for k in range(n)}


@pytest.mark.parametrize("n", [12, 16, 40])
@pytest.mark.parametrize("kind", ["random", "equal", "symmetric-few-values"])
def test_runs_in_time_and_returns_a_permutation(n: int, kind: str) -> None:
    rnd = random.Random(n)
    peers = _peers(n)
    if kind == "random":
        cost = {(a, b): rnd.uniform(0.01, 1.0) for a, b in itertools.permutations(peers, 2)}
    elif kind == "equal":
        cost = {}
    else:
        cost = {(a, b): float(rnd.randint(1, 3)) for a, b in itertools.combinations(peers, 2)}
    shuffled = peers[:]
    rnd.shuffle(shuffled)
    t0 = time.perf_counter()
    got = ring_order(shuffled, cost)
    assert time.perf_counter() - t0 < 0.5
    assert sorted(got) == peers
    assert got[0] == peers[0]
    # the same costs in another order give the same ring
    assert ring_order(list(reversed(shuffled)), dict(reversed(list(cost.items())))) == got


def test_heuristic_never_worse_than_the_sorted_ring() -> None:
    rnd = random.Random(5)
    peers = _peers(16)
    cost = {(a, b): rnd.uniform(0.01, 1.0) for a, b in itertools.combinations(peers, 2)}
    got = ring_order(peers, cost)
    assert ring_cost(got, cost) <= ring_cost(peers, cost)


@pytest.mark.parametrize(
    ("peers", "cost", "kwargs"),
    [
        (["a", "a", "b"], {}, {}),
        (["a", 1, "b"], {}, {}),
        (["a", "b", "c"], {("a", "b"): -1.0}, {}),
        (["a", "b", "c"], {("a", "b"): math.nan}, {}),
        (["a", "b", "c"], {("a", "b"): math.inf}, {}),
        (["a", "b", "c"], {}, {"default_cost": -1.0}),
        (["a", "b", "c"], {}, {"exact_up_to": 17}),
        (["a", "b", "c"], {}, {"near_up_to": -1}),
    ],
)
def test_ring_order_refuses_bad_input(peers: list, cost: Costs, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ring_order(peers, cost, **kwargs)


def test_edge_cost_and_its_fallbacks() -> None:
    assert edge_cost(0.02, 8e6, 1000) == pytest.approx(0.01 + 0.001)
    assert edge_cost(0.0, 1e9, 0) == 0.0
    assert edge_cost(None, 8e6, 1000) == pytest.approx(DEFAULT_RTT_S / 2 + 0.001)
    unknown_bw = DEFAULT_RTT_S / 2 + 8000 / DEFAULT_BANDWIDTH_BPS
    for bw in (None, 0.0, -5.0, math.nan, math.inf):
        assert edge_cost(None, bw, 1000) == pytest.approx(unknown_bw)
    for rtt in (math.nan, -1.0, math.inf):
        assert edge_cost(rtt, None, 1000) == pytest.approx(unknown_bw)
    # more bytes, slower link, longer round trip: never cheaper
    assert edge_cost(0.01, 1e6, 2000) > edge_cost(0.01, 1e6, 1000)
    assert edge_cost(0.01, 1e6, 1000) > edge_cost(0.01, 1e7, 1000)
    assert edge_cost(0.02, 1e6, 1000) > edge_cost(0.01, 1e6, 1000)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError):
            edge_cost(0.01, 1e6, bad)  # type: ignore[arg-type]
