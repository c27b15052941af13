"""The chaos schedule and checkers without a network: a seed replays, the generator keeps its
limits, and each checker catches the violation it is for (and nothing on clean input)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode_simulations.chaos import (
    RoundWatch,
    check_finished,
    check_logs,
    load,
    make_schedule,
)
from p2pnode_simulations.chaos.schedule import PRIMARY
from p2pnode_simulations.testbed import LinkSpec

pytestmark = pytest.mark.timeout(60)
COMMITTEE = (1, 2, 3, 4)


def test_a_seed_makes_the_same_schedule_and_it_survives_json(tmp_path: Path) -> None:
    a = make_schedule(7, 600, 8, COMMITTEE)
    assert a == make_schedule(7, 600, 8, COMMITTEE)
    assert a != make_schedule(8, 600, 8, COMMITTEE)
    path = tmp_path / "schedule.json"
    path.write_text(a.to_json())
    assert load(path) == a
    kinds = a.counts()
    for k in ("kill", "stop", "partition", "links"):
        assert kinds.get(k, 0) >= 1, kinds  # ten minutes exercise every kind


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), minutes=st.floats(0.5, 15))
def test_every_fault_is_undone_inside_the_window_within_its_limits(
    seed: int, minutes: float
) -> None:
    s = make_schedule(seed, minutes * 60, 8, COMMITTEE)
    down: set[object] = set()
    partitioned = False
    for e in s.events:
        assert 0 <= e.at <= s.duration
        if e.kind in ("kill", "stop"):
            assert e.node not in down
            down.add(e.node)
            validators = [n for n in down if n == PRIMARY or n in COMMITTEE]
            assert len(validators) <= 1, s.events
            assert len(down) <= 2
        elif e.kind in ("restart", "cont"):
            down.remove(e.node)
        elif e.kind == "partition":
            assert not partitioned
            partitioned = True
            assert sorted(sum(e.groups, ())) == list(range(1, 9))
        elif e.kind == "heal":
            partitioned = False
    assert not down and not partitioned
    links = [e for e in s.events if e.kind == "links"]
    assert not links or links[-1].links == s.base
    for e in links:  # each is a setting the testbed accepts
        assert e.links is not None
        LinkSpec(delay=e.links.delay, jitter=e.links.jitter, loss=e.links.loss)


def test_loopback_schedules_have_only_process_faults() -> None:
    s = make_schedule(3, 600, 8, COMMITTEE, partitions=False, link_changes=False)
    assert set(s.counts()) <= {"kill", "restart", "stop", "cont"}


def test_check_logs_finds_a_fork_and_a_gap() -> None:
    same = {"a": {1: "x", 2: "y"}, "b": {1: "x", 2: "y", 3: "z"}}
    assert check_logs(same) == []
    fork = {"a": {1: "x", 2: "y"}, "b": {1: "x", 2: "q"}}
    assert [v for v in check_logs(fork) if "seq 2" in v]
    gap = {"a": {1: "x", 3: "z"}}
    assert check_logs(gap) and check_logs(gap, gaps=False) == []


def _h(*keys: str) -> list[dict[str, object]]:
    return [{"round": r, "model_key": k} for r, k in enumerate(keys, 1)]


def test_round_watch_catches_a_lost_a_doubled_and_a_forked_round() -> None:
    w = RoundWatch()
    w.observe("n1", "j", _h("a", "b"))
    w.observe("n2", "j", _h("a"))
    assert w.violations == []
    w.observe("n1", "j", _h("a"))  # n1 had two rounds: one was lost
    assert any("shrank" in v for v in w.violations)
    w2 = RoundWatch()
    w2.observe("n1", "j", [{"round": 1, "model_key": "a"}, {"round": 1, "model_key": "a"}])
    assert any("doubled" in v for v in w2.violations)
    w3 = RoundWatch()
    w3.observe("n1", "j", _h("a", "b"))
    w3.observe("n2", "j", _h("a", "c"))
    assert any("round 2" in v for v in w3.violations)
    assert w3.committed("j") == {1: "a", 2: "b"}


def test_check_finished_names_each_node_that_did_not_finish() -> None:
    good = {"status": "completed", "rounds_done": 4}
    assert check_finished({"n1": good, "n2": good}, "j", 4) == []
    bad = check_finished({"n1": good, "n2": {"status": "running", "rounds_done": 3}}, "j", 4)
    assert len(bad) == 1 and "n2" in bad[0]
    assert check_finished({"n3": {}}, "j", 4) == ["n3 j: no answer after ?/4 rounds"]
