"""Aggregation rules: hand-computed cases, order-free bits, Byzantine bounds, outlier evidence."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.training.aggregation import (
    ROBUST_RULE_NAMES,
    RULE_NAMES,
    CenteredClip,
    ClientUpdate,
    CoordinateMedian,
    FedAvg,
    Krum,
    MultiKrum,
    NearestNeighborMixing,
    TrimmedMean,
    canonicalize,
    krum_scores,
    make_rule,
    nearest_neighbor_mix,
)


def _u(cid: str, values: list[float], n: int = 1) -> ClientUpdate:
    return ClientUpdate(cid, np.array(values, dtype=np.float32), n)


# --- hand-computed cases ---------------------------------------------------------------------


def test_fedavg_weights_by_samples() -> None:
    res = FedAvg().aggregate([_u("a", [1.0, 0.0], 1), _u("b", [4.0, 3.0], 3)])
    np.testing.assert_array_equal(res.aggregate, np.array([3.25, 2.25], np.float32))
    assert res.outliers == () and res.contributors == ("a", "b")
    assert res.aggregate.dtype == np.float32


def test_fedavg_clipping_scales_long_updates_and_reports_them() -> None:
    # b has norm 5 and is clipped to norm 1: (0.6, 0.8); mean with a = (0.8, 0.4).
    res = FedAvg(clip_norm=1.0).aggregate([_u("a", [1.0, 0.0]), _u("b", [3.0, 4.0])])
    np.testing.assert_allclose(res.aggregate, [0.8, 0.4], rtol=1e-6)
    assert res.outliers == ("b",)
    assert res.scores["b"] == pytest.approx(0.2)


def test_median_odd_and_even() -> None:
    ups = [_u("a", [1, 10]), _u("b", [2, -5]), _u("c", [100, 0])]
    np.testing.assert_array_equal(CoordinateMedian().aggregate(ups).aggregate, [2, 0])
    ups.append(_u("d", [3, 1]))
    np.testing.assert_array_equal(CoordinateMedian().aggregate(ups).aggregate, [2.5, 0.5])


def test_trimmed_mean_drops_extremes_per_coordinate() -> None:
    ups = [_u("a", [1, 50]), _u("b", [2, -7]), _u("c", [3, 1]), _u("d", [4, 2]), _u("e", [90, 3])]
    # Column 0 keeps 2,3,4 -> 3; column 1 keeps 1,2,3 -> 2.
    res = TrimmedMean(trim=1).aggregate(ups)
    np.testing.assert_array_equal(res.aggregate, [3, 2])
    with pytest.raises(ValueError, match="needs more than"):
        TrimmedMean(trim=3).aggregate(ups)


def test_krum_scores_and_choice() -> None:
    # Four points on a line and one far away; n=5, f=1 -> each score sums n-f-2 = 2 distances.
    ups = [_u("a", [0]), _u("b", [1]), _u("c", [2]), _u("d", [3]), _u("z", [100])]
    c = canonicalize(ups)
    scores = krum_scores(c.stack, f=1)
    # a: nearest b (1), c (4) -> 5; b: a (1), c (1) -> 2; c: b, d -> 2; d: c (1), b (4) -> 5.
    np.testing.assert_array_equal(scores[:4], [5, 2, 2, 5])
    assert scores[4] == 97**2 + 98**2
    res = Krum(f=1).aggregate(ups)
    # b and c tie at 2: the stable order picks the first in canonical order, b.
    np.testing.assert_array_equal(res.aggregate, [1])
    assert res.contributors == ("b",) and res.outliers == ("z",)
    multi = MultiKrum(f=1).aggregate(ups)  # m = n - f = 4: a, b, c, d
    np.testing.assert_array_equal(multi.aggregate, [1.5])
    assert multi.contributors == ("a", "b", "c", "d")
    with pytest.raises(ValueError, match="2f\\+3"):
        Krum(f=2).aggregate(ups[:6])


def test_centered_clip_hand_computed() -> None:
    # Median start 0 (inputs -1, 0, 1, 10 -> median 0.5). Use tau=1, one iteration:
    # diffs -1.5, -0.5, 0.5, 9.5 -> clipped -1, -0.5, 0.5, 1 -> mean 0 -> v stays 0.5.
    ups = [_u("a", [-1]), _u("b", [0]), _u("c", [1]), _u("d", [10])]
    res = CenteredClip(tau=1.0, iterations=1).aggregate(ups)
    np.testing.assert_array_equal(res.aggregate, [0.5])
    # With a huge tau nothing is clipped and it converges to the plain mean in one step.
    res = CenteredClip(tau=1e9, iterations=1).aggregate(ups)
    np.testing.assert_allclose(res.aggregate, [2.5])


def test_nearest_neighbor_mixing_hand_computed() -> None:
    c = canonicalize([_u("a", [0]), _u("b", [2]), _u("c", [10])])
    # f=1: each row becomes the mean of itself and its nearest: a,b -> 1; c -> (10+2)/2 = 6.
    np.testing.assert_array_equal(nearest_neighbor_mix(c.stack, 1), [[1], [1], [6]])


def test_non_finite_updates_are_excluded_and_reported() -> None:
    ups = [_u("a", [1.0]), _u("b", [np.nan]), _u("c", [3.0]), _u("d", [np.inf])]
    for rule in (FedAvg(), CoordinateMedian(), TrimmedMean(0), CenteredClip()):
        res = rule.aggregate(ups)
        np.testing.assert_array_equal(res.aggregate, [2.0])
        assert {"b", "d"} <= set(res.outliers)
        assert "b" not in res.contributors


def test_canonicalize_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="no updates"):
        FedAvg().aggregate([])
    with pytest.raises(ValueError, match="duplicate"):
        FedAvg().aggregate([_u("a", [1]), _u("a", [2])])
    with pytest.raises(ValueError, match="expected"):
        FedAvg().aggregate([_u("a", [1]), _u("b", [1, 2])])
    with pytest.raises(ValueError):
        ClientUpdate("a", np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError):
        ClientUpdate("a", np.zeros(2, np.float32), num_samples=0)


def test_rules_flag_the_attackers_as_outliers() -> None:
    rng = np.random.default_rng(0)
    honest = [rng.normal(1.0, 0.1, 50).astype(np.float32) for _ in range(6)]
    ups = [ClientUpdate(f"h{i}", h) for i, h in enumerate(honest)]
    ups += [ClientUpdate(f"x{i}", (-10 * honest[i]).astype(np.float32)) for i in range(2)]
    for name in ("median", "trimmed_mean", "krum", "multi_krum", "centered_clip"):
        for mixing in (False, True):
            res = make_rule(name, f=2, mixing=mixing).aggregate(ups)
            assert res.outliers == ("x0", "x1"), (name, mixing, res.outliers)
            # And the aggregate stays with the honest: all coordinates near 1.
            assert np.all(np.abs(res.aggregate - 1.0) < 0.35), (name, mixing)


def test_make_rule_puts_nnm_in_front_of_robust_rules_by_default() -> None:
    for name in ROBUST_RULE_NAMES:
        rule = make_rule(name, f=2)
        assert isinstance(rule, NearestNeighborMixing) and rule.f == 2, name
        assert rule.name == f"nnm+{name}"
        assert make_rule(name, f=2, mixing=False).name == name
    assert make_rule("fedavg").name == "fedavg"  # FedAvg tolerates nobody: left plain
    assert make_rule("fedavg", mixing=True).name == "nnm+fedavg"  # unless asked
    assert set(ROBUST_RULE_NAMES) == set(RULE_NAMES) - {"fedavg"}


def test_default_trimmed_mean_is_nnm_then_trimmed_mean_by_hand() -> None:
    # n=5, f=1. Squared distances from 0, 1, 2, 3, 100; each row's 4 nearest (itself included,
    # ties to the lower index): 0,1,2 -> {0,1,2,3}; 3 -> {0,1,2,3}; 100 -> {1,2,3,100}.
    # Mixed: 1.5, 1.5, 1.5, 1.5, 26.5; trimming 1 each side leaves 1.5, 1.5, 1.5 -> 1.5.
    ups = [_u(f"c{i}", [v]) for i, v in enumerate([0.0, 1.0, 2.0, 3.0, 100.0])]
    res = make_rule("trimmed_mean", f=1).aggregate(ups)
    np.testing.assert_array_equal(res.aggregate, np.array([1.5], np.float32))
    assert res.outliers == ("c4",)
    # The plain rule keeps 1, 2, 3 -> 2.0.
    plain = make_rule("trimmed_mean", f=1, mixing=False).aggregate(ups)
    np.testing.assert_array_equal(plain.aggregate, np.array([2.0], np.float32))


def test_max_byzantine_documents_tolerance() -> None:
    assert FedAvg().max_byzantine(10) == 0
    assert CoordinateMedian().max_byzantine(8) == 3
    assert CoordinateMedian().max_byzantine(9) == 4
    assert TrimmedMean(2).max_byzantine(8) == 2
    assert TrimmedMean(2).max_byzantine(4) == 0
    assert MultiKrum(f=2).max_byzantine(7) == 2
    assert MultiKrum(f=2).max_byzantine(6) == 0
    assert CenteredClip().max_byzantine(8) == 3
    assert NearestNeighborMixing(TrimmedMean(2), f=2).max_byzantine(8) == 2


# --- properties ------------------------------------------------------------------------------

ALL_RULES = [
    FedAvg(),
    FedAvg(clip_norm=5.0),
    CoordinateMedian(),
    TrimmedMean(trim=1),
    Krum(f=1),
    MultiKrum(f=1),
    CenteredClip(),
    CenteredClip(tau=0.5, iterations=5),
    NearestNeighborMixing(TrimmedMean(trim=1), f=1),
]

finite32 = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def update_sets(draw: st.DrawFn, min_n: int = 5, max_n: int = 9) -> list[ClientUpdate]:
    n = draw(st.integers(min_n, max_n))
    d = draw(st.integers(1, 12))
    ups = []
    for i in range(n):
        values = draw(st.lists(finite32, min_size=d, max_size=d))
        samples = draw(st.integers(1, 1000))
        ups.append(ClientUpdate(f"c{i:02d}", np.array(values, dtype=np.float32), samples))
    return ups


@given(ups=update_sets(), data=st.data())
def test_permuted_inputs_give_identical_bits(ups: list[ClientUpdate], data: st.DataObject) -> None:
    perm = data.draw(st.permutations(ups))
    for rule in ALL_RULES:
        a = rule.aggregate(ups)
        b = rule.aggregate(perm)
        assert a.aggregate.tobytes() == b.aggregate.tobytes(), rule
        assert a.outliers == b.outliers and a.contributors == b.contributors, rule


@st.composite
def honest_and_byzantine(draw: st.DrawFn) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    d = draw(st.integers(1, 10))
    n = draw(st.integers(3, 11))
    tolerated = (n - 1) // 2
    byz = draw(st.integers(0, tolerated))
    vec = st.lists(finite32, min_size=d, max_size=d).map(lambda v: np.array(v, np.float32))
    wild = st.floats(allow_nan=False, allow_infinity=False, width=32)
    byz_vec = st.lists(wild, min_size=d, max_size=d).map(lambda v: np.array(v, np.float32))
    honest = [draw(vec) for _ in range(n - byz)]
    byzantine = [draw(byz_vec) for _ in range(byz)]
    return honest, byzantine, byz


def _labelled(honest: list[np.ndarray], byzantine: list[np.ndarray], data: st.DataObject):
    vectors = honest + byzantine
    # Byzantine inputs may sit anywhere in the canonical order.
    names = data.draw(st.permutations([f"c{i:02d}" for i in range(len(vectors))]))
    return [ClientUpdate(name, v) for name, v in zip(names, vectors, strict=True)]


@given(case=honest_and_byzantine(), data=st.data())
def test_median_is_bounded_by_honest_inputs(case, data: st.DataObject) -> None:
    honest, byzantine, _ = case
    agg = CoordinateMedian().aggregate(_labelled(honest, byzantine, data)).aggregate
    lo, hi = np.min(honest, axis=0), np.max(honest, axis=0)
    assert np.all(lo <= agg) and np.all(agg <= hi)


@given(case=honest_and_byzantine(), data=st.data())
def test_trimmed_mean_is_bounded_by_honest_inputs(case, data: st.DataObject) -> None:
    honest, byzantine, byz = case
    n = len(honest) + len(byzantine)
    trim = data.draw(st.integers(byz, (n - 1) // 2))  # the rule is told at least the true count
    agg = TrimmedMean(trim=trim).aggregate(_labelled(honest, byzantine, data)).aggregate
    lo, hi = np.min(honest, axis=0), np.max(honest, axis=0)
    assert np.all(lo <= agg) and np.all(agg <= hi)


@given(ups=update_sets(min_n=1, max_n=6))
def test_fedavg_of_equal_weights_is_between_min_and_max(ups: list[ClientUpdate]) -> None:
    ups = [ClientUpdate(u.client_id, u.delta, 1) for u in ups]
    agg = FedAvg().aggregate(ups).aggregate
    stack = np.stack([u.delta for u in ups])
    assert np.all(stack.min(axis=0) <= agg) and np.all(agg <= stack.max(axis=0))


@given(ups=update_sets(min_n=5, max_n=9))
def test_krum_returns_one_of_its_inputs(ups: list[ClientUpdate]) -> None:
    res = Krum(f=1).aggregate(ups)
    (chosen,) = res.contributors
    delta = next(u.delta for u in ups if u.client_id == chosen)
    assert res.aggregate.tobytes() == delta.tobytes()


def test_large_updates_give_identical_bits_in_any_order() -> None:
    rng = np.random.default_rng(11)
    ups = [
        ClientUpdate(f"peer-{i}", rng.normal(0, 1, 20_000).astype(np.float32), int(10 + i))
        for i in range(8)
    ]
    rules = [*ALL_RULES, MultiKrum(f=2), NearestNeighborMixing(CenteredClip(), f=2)]
    reference = [r.aggregate(ups).aggregate.tobytes() for r in rules]
    for _ in range(3):
        order = [ups[i] for i in rng.permutation(len(ups))]
        assert [r.aggregate(order).aggregate.tobytes() for r in rules] == reference
