"""Collectives schedules: shards and parts tile their range, and every rank's plan, simulated in
lockstep with symbolic values, leaves every rank with every rank's contribution to every element
exactly once; every send meets exactly one receive."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode_protocols.collectives import (
    Algorithm,
    Phase,
    Transfer,
    butterfly_plan,
    choose_algorithm,
    owner_butterfly,
    owner_ring,
    parts,
    ring_plan,
    shards,
)

pytestmark = pytest.mark.timeout(60)

Plan = Callable[[int, int], list[Transfer]]
PLANS: dict[str, tuple[Plan, Callable[[int, int], int]]] = {
    "ring": (ring_plan, owner_ring),
    "butterfly": (butterfly_plan, owner_butterfly),
}


# -- shards and parts -------------------------------------------------------------------------


@given(length=st.integers(0, 500), n=st.integers(1, 40))
def test_shards_tile_the_range_evenly(length: int, n: int) -> None:
    got = shards(length, n)
    assert len(got) == n
    covered = [i for a, b in got for i in range(a, b)]
    assert covered == list(range(length))
    sizes = [b - a for a, b in got]
    assert max(sizes) - min(sizes) <= 1
    # the first length % n shards hold the extra element
    assert sizes == sorted(sizes, reverse=True)
    assert sum(1 for s in sizes if s > length // n) == length % n


def test_shards_examples() -> None:
    assert shards(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert shards(2, 4) == [(0, 1), (1, 2), (2, 2), (2, 2)]
    assert shards(0, 2) == [(0, 0), (0, 0)]


@pytest.mark.parametrize(("length", "n"), [(5, 0), (5, -1), (-1, 3), (5, 1.0), (True, 2)])
def test_shards_refuses_bad_arguments(length: object, n: object) -> None:
    with pytest.raises(ValueError):
        shards(length, n)  # type: ignore[arg-type]


@given(start=st.integers(0, 300), size=st.integers(0, 300), part_len=st.integers(1, 50))
def test_parts_tile_the_range(start: int, size: int, part_len: int) -> None:
    got = parts(start, start + size, part_len)
    assert [i for a, b in got for i in range(a, b)] == list(range(start, start + size))
    assert all(0 < b - a <= part_len for a, b in got)
    # only the last part may be short
    assert all(b - a == part_len for a, b in got[:-1])


def test_parts_examples_and_refusals() -> None:
    assert parts(3, 3, 4) == []
    assert parts(0, 10, 4) == [(0, 4), (4, 8), (8, 10)]
    for bad in ((0, 4, 0), (5, 4, 1), (-1, 4, 1)):
        with pytest.raises(ValueError):
            parts(*bad)


# -- plans ------------------------------------------------------------------------------------


def _sends_and_receives(plan: Plan, n: int) -> tuple[Counter, Counter]:
    sends: Counter = Counter()
    recvs: Counter = Counter()
    for r in range(n):
        for t in plan(r, n):
            for dst in t.send_to:
                sends[(t.phase, t.step, t.send_shard, r, dst)] += 1
            for src in t.recv_from:
                recvs[(t.phase, t.step, t.recv_shard, src, r)] += 1
    return sends, recvs


def _simulate(plan: Plan, length: int, n: int, part_len: int, init: list[list]) -> list[list]:
    """Runs every rank's plan in lockstep over per-element values that support ``+`` and
    returns each rank's final array. Within a (phase, step) every send reads the values from
    the start of the step; receives apply after, part by part."""
    bounds = shards(length, n)
    vals = [list(row) for row in init]
    plans = [plan(r, n) for r in range(n)]
    keys = sorted({(t.phase, t.step) for p in plans for t in p})
    for key in keys:
        in_flight: dict[tuple[int, int, int], list[tuple[int, list]]] = {}
        for r in range(n):
            for t in plans[r]:
                if (t.phase, t.step) != key or t.send_shard is None:
                    continue
                a, b = bounds[t.send_shard]
                wire = [(lo, vals[r][lo:hi]) for lo, hi in parts(a, b, part_len)]
                for dst in t.send_to:
                    assert (r, dst, t.send_shard) not in in_flight
                    in_flight[(r, dst, t.send_shard)] = wire
        for r in range(n):
            for t in plans[r]:
                if (t.phase, t.step) != key or t.recv_shard is None:
                    continue
                for src in t.recv_from:
                    for lo, chunk in in_flight.pop((src, r, t.recv_shard)):
                        for k, v in enumerate(chunk):
                            vals[r][lo + k] = vals[r][lo + k] + v if t.accumulate else v
        assert not in_flight, "a send nobody received"
    return vals


@pytest.mark.parametrize("name", sorted(PLANS))
@settings(max_examples=60)
@given(length=st.integers(0, 200), n=st.integers(1, 9), part_len=st.integers(1, 64))
def test_every_rank_ends_with_every_contribution_once(
    name: str, length: int, n: int, part_len: int
) -> None:
    plan, _ = PLANS[name]
    init = [[Counter({(r, i): 1}) for i in range(length)] for r in range(n)]
    final = _simulate(plan, length, n, part_len, init)
    want = [Counter({(r, i): 1 for r in range(n)}) for i in range(length)]
    for r in range(n):
        assert final[r] == want


@pytest.mark.parametrize("name", sorted(PLANS))
@settings(max_examples=40)
@given(
    length=st.integers(0, 200),
    n=st.integers(1, 9),
    part_len=st.integers(1, 64),
    seed=st.integers(0, 2**32 - 1),
)
def test_exact_integer_sums(name: str, length: int, n: int, part_len: int, seed: int) -> None:
    plan, _ = PLANS[name]
    rng = np.random.default_rng(seed)
    data = rng.integers(-(2**40), 2**40, size=(n, length), dtype=np.int64)
    final = _simulate(plan, length, n, part_len, [[int(x) for x in row] for row in data])
    want = [int(x) for x in data.sum(axis=0)]
    for r in range(n):
        assert final[r] == want


@pytest.mark.parametrize("name", sorted(PLANS))
@pytest.mark.parametrize("n", range(1, 10))
def test_every_send_meets_one_receive(name: str, n: int) -> None:
    plan, _ = PLANS[name]
    sends, recvs = _sends_and_receives(plan, n)
    assert sends == recvs
    assert all(c == 1 for c in sends.values())
    # each rank sends and receives 2 (n - 1) shards in all: the bandwidth-optimal volume
    for r in range(n):
        assert sum(c for k, c in sends.items() if k[3] == r) == 2 * (n - 1)


@pytest.mark.parametrize("name", sorted(PLANS))
@pytest.mark.parametrize("n", range(1, 10))
def test_owner_holds_the_reduced_shard_after_reduce_scatter(name: str, n: int) -> None:
    plan, owner = PLANS[name]
    length = 3 * n + 1
    init = [[Counter({(r, i): 1}) for i in range(length)] for r in range(n)]

    def reduce_scatter_only(rank: int, size: int) -> list[Transfer]:
        return [t for t in plan(rank, size) if t.phase is Phase.REDUCE_SCATTER]

    final = _simulate(reduce_scatter_only, length, n, 2, init)
    for shard, (a, b) in enumerate(shards(length, n)):
        holder = owner(shard, n)
        for i in range(a, b):
            assert final[holder][i] == Counter({(r, i): 1 for r in range(n)})


def test_ring_plan_shape() -> None:
    assert ring_plan(0, 1) == []
    plan = ring_plan(1, 4)
    assert [(t.phase, t.step) for t in plan] == [
        (Phase.REDUCE_SCATTER, 0),
        (Phase.REDUCE_SCATTER, 1),
        (Phase.REDUCE_SCATTER, 2),
        (Phase.ALL_GATHER, 0),
        (Phase.ALL_GATHER, 1),
        (Phase.ALL_GATHER, 2),
    ]
    assert plan[0] == Transfer(Phase.REDUCE_SCATTER, 0, (2,), 1, (0,), 0, True)
    assert plan[3] == Transfer(Phase.ALL_GATHER, 0, (2,), 2, (0,), 1, False)


def test_butterfly_plan_shape() -> None:
    assert butterfly_plan(0, 1) == []
    plan = butterfly_plan(1, 3)
    assert plan == [
        Transfer(Phase.REDUCE_SCATTER, 0, (2,), 2, (2,), 1, True),
        Transfer(Phase.REDUCE_SCATTER, 0, (0,), 0, (0,), 1, True),
        Transfer(Phase.ALL_GATHER, 1, (2,), 1, (2,), 2, False),
        Transfer(Phase.ALL_GATHER, 1, (0,), 1, (0,), 0, False),
    ]


@pytest.mark.parametrize("fn", [ring_plan, butterfly_plan, owner_ring, owner_butterfly])
@pytest.mark.parametrize(("a", "n"), [(0, 0), (3, 3), (-1, 3), (0, -2)])
def test_plans_refuse_bad_ranks(fn: Callable[[int, int], object], a: int, n: int) -> None:
    with pytest.raises(ValueError):
        fn(a, n)


def test_transfer_checks_its_fields() -> None:
    with pytest.raises(ValueError):
        Transfer(Phase.REDUCE_SCATTER, 0, (1,), None, (), None, True)
    with pytest.raises(ValueError):
        Transfer(Phase.REDUCE_SCATTER, -1, (), None, (), None, True)
    with pytest.raises(ValueError):
        Transfer(0, 0, (), None, (), None, True)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("nbytes", "n", "want"),
    [
        (0, 4, Algorithm.DIRECT),
        (64 * 1024 - 1, 8, Algorithm.DIRECT),
        (64 * 1024, 2, Algorithm.BUTTERFLY),
        (10**9, 8, Algorithm.BUTTERFLY),
        (10**9, 9, Algorithm.RING),
        (10**9, 1, Algorithm.DIRECT),
    ],
)
def test_choose_algorithm(nbytes: int, n: int, want: Algorithm) -> None:
    assert choose_algorithm(nbytes, n) is want
    assert str(want) == want.value


def test_choose_algorithm_threshold_and_refusals() -> None:
    assert choose_algorithm(100, 3, direct_below=0) is Algorithm.BUTTERFLY
    assert choose_algorithm(100, 3, direct_below=101) is Algorithm.DIRECT
    for bad in ((-1, 3), (10, 0)):
        with pytest.raises(ValueError):
            choose_algorithm(*bad)
