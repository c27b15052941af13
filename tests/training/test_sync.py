"""Sync policies: BSP deadlines and stragglers, SSP bounds, bounded-delay asynchrony."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.training.sync import BSP, SSP, Action, BoundedAsync, Straggler, Weighting

PEERS = ("a", "b", "c", "d")


def test_bsp_aggregates_as_soon_as_everyone_is_in() -> None:
    d = BSP(deadline=10.0).decide(100.0, 101.0, PEERS, PEERS)
    assert d.action is Action.AGGREGATE and d.included == PEERS and d.dropped == ()


def test_bsp_drop_policy_waits_for_the_deadline_then_drops() -> None:
    bsp = BSP(deadline=10.0, straggler=Straggler.DROP, min_updates=2)
    d = bsp.decide(100.0, 105.0, PEERS, ["c", "a"])
    assert d.action is Action.WAIT and d.next_check == 110.0
    d = bsp.decide(100.0, 110.0, PEERS, ["c", "a", "zz"])  # zz is not a participant
    assert d.action is Action.AGGREGATE
    assert d.included == ("a", "c") and d.dropped == ("b", "d")


def test_bsp_wait_policy_gives_stragglers_extra_time() -> None:
    bsp = BSP(deadline=10.0, straggler=Straggler.WAIT, max_wait=5.0)
    d = bsp.decide(0.0, 12.0, PEERS, ["a", "b", "c"])
    assert d.action is Action.WAIT and d.next_check == 15.0
    assert bsp.decide(0.0, 14.0, PEERS, PEERS).action is Action.AGGREGATE
    d = bsp.decide(0.0, 15.0, PEERS, ["a", "b", "c"])
    assert d.action is Action.AGGREGATE and d.dropped == ("d",)


def test_bsp_aborts_below_the_quorum() -> None:
    d = BSP(deadline=1.0, min_updates=3).decide(0.0, 2.0, PEERS, ["a"])
    assert d.action is Action.ABORT and d.included == () and d.dropped == PEERS
    with pytest.raises(ValueError):
        BSP(deadline=0.0)


def test_ssp_bounds_the_gap_between_fastest_and_slowest() -> None:
    ssp = SSP(staleness_bound=2)
    clocks = {"a": 6, "b": 3, "c": 5}
    assert ssp.can_advance("b", clocks) and ssp.can_advance("c", clocks)
    assert not ssp.can_advance("a", clocks)  # 6 - 3 = 3 > 2
    assert ssp.blocked(clocks) == ("a",)
    assert ssp.accepts(update_round=8, current_round=10)
    assert not ssp.accepts(update_round=7, current_round=10)
    assert not ssp.accepts(update_round=11, current_round=10)
    # s = 0 is BSP: nobody moves ahead of the slowest.
    assert SSP(0).blocked({"a": 1, "b": 0}) == ("a",)
    with pytest.raises(KeyError):
        ssp.can_advance("zz", clocks)


@given(clocks=st.dictionaries(st.sampled_from(PEERS), st.integers(0, 50), min_size=1))
def test_ssp_slowest_worker_is_never_blocked(clocks: dict[str, int]) -> None:
    ssp = SSP(staleness_bound=1)
    slowest = min(clocks, key=lambda w: (clocks[w], w))
    assert ssp.can_advance(slowest, clocks)


def test_bounded_async_weights_and_refuses() -> None:
    poly = BoundedAsync(max_staleness=4, alpha=0.5, weighting=Weighting.POLYNOMIAL, a=0.5)
    assert poly.mixing_weight(10, 10) == 0.5
    assert poly.mixing_weight(10, 7) == pytest.approx(0.5 * 4**-0.5)
    assert poly.mixing_weight(10, 5) == 0.0
    hinge = BoundedAsync(max_staleness=10, weighting=Weighting.HINGE, a=1.0, b=2)
    assert hinge.staleness_factor(2) == 1.0 and hinge.staleness_factor(4) == pytest.approx(1 / 3)
    assert BoundedAsync(3, weighting=Weighting.CONSTANT).staleness_factor(3) == 1.0
    with pytest.raises(ValueError):
        poly.mixing_weight(3, 4)

    params = np.zeros(3, np.float32)
    client = np.full(3, 2.0, np.float32)
    new, used = poly.apply(params, client, model_version=1, update_version=1)
    assert used and np.allclose(new, 1.0) and new.dtype == np.float32
    same, used = poly.apply(params, client, model_version=9, update_version=1)
    assert not used and same is params


@given(s=st.integers(0, 100))
def test_staleness_factor_is_monotone(s: int) -> None:
    for w in Weighting:
        p = BoundedAsync(max_staleness=60, weighting=w, a=0.7, b=3)
        assert 0.0 <= p.staleness_factor(s + 1) <= p.staleness_factor(s) <= 1.0
