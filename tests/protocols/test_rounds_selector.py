"""The default task selector: capabilities, free slots (and slots taken by jobs of higher
priority), model locality and reliability, shards kept across rounds, min participants."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode_protocols.rounds import Candidate, Capabilities, JobSpec, select_tasks

pytestmark = pytest.mark.timeout(60)

BASE = "m-1"


def _c(i: int, **kw: object) -> Candidate:
    return Candidate(node=f"n{i}".encode(), **kw)  # type: ignore[arg-type]


def _nodes(tasks: tuple) -> list[bytes]:  # type: ignore[type-arg]
    return [t.node for t in tasks]


def test_capabilities_filter() -> None:
    spec = JobSpec(
        max_participants=4,
        capabilities=Capabilities(min_cpu_cores=4, min_memory_mb=1024, gpu=True),
    )
    cands = [
        _c(0, cpu_cores=8, memory_mb=4096, gpu=True),
        _c(1, cpu_cores=2, memory_mb=4096, gpu=True),  # too few cores
        _c(2, cpu_cores=8, memory_mb=512, gpu=True),  # too little memory
        _c(3, cpu_cores=8, memory_mb=4096, gpu=False),  # no gpu
        _c(4, cpu_cores=4, memory_mb=1024, gpu=True, alive=False),  # dead
        _c(5, cpu_cores=4, memory_mb=1024, gpu=True),
    ]
    assert _nodes(select_tasks(spec, 1, BASE, cands, {}, {})) == [b"n0", b"n5"]


def test_free_slots_and_taken() -> None:
    spec = JobSpec(max_participants=4)
    cands = [_c(0, free_slots=0), _c(1, free_slots=1), _c(2, free_slots=2), _c(3)]
    assert _nodes(select_tasks(spec, 1, BASE, cands, {}, {})) == [b"n1", b"n2", b"n3"]
    # Slots a job of higher priority already took are not free.
    taken = {b"n1": 1, b"n2": 1, b"n3": 2}
    assert _nodes(select_tasks(spec, 1, BASE, cands, taken, {})) == [b"n2"]


def test_model_holders_then_reliability_first() -> None:
    spec = JobSpec(max_participants=2, shards=2)
    cands = [
        _c(0, reliability=0.9),
        _c(1, reliability=0.2, models=(BASE,)),
        _c(2, reliability=0.95),
        _c(3, reliability=0.1, models=("old",)),
    ]
    assert _nodes(select_tasks(spec, 1, BASE, cands, {}, {})) == [b"n1", b"n2"]


def test_at_most_max_participants_and_shards() -> None:
    cands = [_c(i) for i in range(10)]
    assert len(select_tasks(JobSpec(max_participants=4), 1, BASE, cands, {}, {})) == 4
    spec = JobSpec(min_participants=1, max_participants=4, shards=2, min_updates=1)
    assert len(select_tasks(spec, 1, BASE, cands, {}, {})) == 2


def test_min_participants() -> None:
    spec = JobSpec(min_participants=3, max_participants=4)
    cands = [_c(0), _c(1), _c(2, alive=False)]
    assert select_tasks(spec, 1, BASE, cands, {}, {}) == ()
    assert len(select_tasks(spec, 1, BASE, [*cands, _c(3)], {}, {})) == 3


def test_keeps_previous_shards() -> None:
    spec = JobSpec(max_participants=3, shards=4)
    cands = [_c(0), _c(1), _c(2)]
    previous = {b"n0": 3, b"n1": 0, b"gone": 1}
    tasks = select_tasks(spec, 5, BASE, cands, {}, previous)
    shards = {t.node: t.shard for t in tasks}
    assert shards[b"n0"] == 3 and shards[b"n1"] == 0
    assert shards[b"n2"] in (1, 2)


def test_free_shards_rotate_over_rounds() -> None:
    spec = JobSpec(max_participants=1, shards=3)
    got = [select_tasks(spec, r, BASE, [_c(0)], {}, {})[0].shard for r in range(1, 7)]
    assert sorted(got[:3]) == [0, 1, 2] and got[:3] == got[3:]


@given(
    st.lists(
        st.builds(
            Candidate,
            node=st.binary(min_size=1, max_size=3),
            alive=st.booleans(),
            cpu_cores=st.integers(0, 4),
            gpu=st.booleans(),
            free_slots=st.integers(0, 2),
            reliability=st.floats(0, 1),
        ),
        max_size=10,
        unique_by=lambda c: c.node,
    ),
    st.integers(1, 4),
    st.integers(0, 4),
    st.integers(1, 50),
    st.dictionaries(st.binary(min_size=1, max_size=3), st.integers(0, 7)),
)
def test_selection_is_always_legal(
    cands: list[Candidate], lo: int, extra: int, rnd: int, previous: dict[bytes, int]
) -> None:
    spec = JobSpec(
        min_participants=lo,
        max_participants=lo + extra,
        shards=lo + extra + 1,
        capabilities=Capabilities(min_cpu_cores=1),
    )
    tasks = select_tasks(spec, rnd, BASE, cands, {}, previous)
    if not tasks:
        return
    nodes = [t.node for t in tasks]
    shards = [t.shard for t in tasks]
    assert len(set(nodes)) == len(nodes) and len(set(shards)) == len(shards)
    assert all(0 <= s < spec.shards for s in shards)
    assert spec.min_participants <= len(nodes) <= spec.max_participants
    by_node = {c.node: c for c in cands}
    assert all(by_node[n].alive and by_node[n].free_slots > 0 for n in nodes)
    # Deterministic: the same inputs choose the same tasks.
    assert select_tasks(spec, rnd, BASE, list(reversed(cands)), {}, previous) == tasks
