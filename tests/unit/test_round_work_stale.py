"""Aggregations queued for a round the log has moved past are dropped, not run late."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from p2pnode.rounds.work import RoundWork
from p2pnode_protocols.rounds.events import Aggregate

pytestmark = pytest.mark.timeout(30)


def _work(current: dict[tuple[str, int], bool], submitted: list[Any]) -> RoundWork:
    return RoundWork(
        blobs=None,  # a dropped aggregation reads nothing; a run one would fail loudly here
        submit=lambda ev: submitted.append(ev) or True,
        spec_of=lambda job: None,
        seed=[1],
        slots=1,
        fetch_timeout=1.0,
        current=lambda job, rnd: current.get((job, rnd), False),
    )


async def test_an_aggregation_of_a_past_round_is_dropped() -> None:
    submitted: list[Any] = []
    work = _work({("j", 3): True}, submitted)
    await work._aggregate(Aggregate(job="j", round=2, base_key="k", updates=()))
    assert submitted == [] and work.stale_skipped == 1


async def test_an_aggregation_of_the_open_round_runs_and_answers() -> None:
    submitted: list[Any] = []
    work = _work({("j", 3): True}, submitted)
    await work._aggregate(Aggregate(job="j", round=3, base_key="k", updates=()))
    # it ran (and failed on the missing blob store): the machine still gets its answer
    assert work.stale_skipped == 0
    (answer,) = submitted
    assert answer.round == 3 and answer.result is None and answer.error


async def test_a_newer_aggregation_of_the_same_proposer_and_round_supersedes_a_queued_one() -> None:
    submitted: list[Any] = []
    work = _work({("j", 3): True}, submitted)
    first = Aggregate(job="j", round=3, base_key="k1", updates=())
    second = Aggregate(job="j", round=3, base_key="k2", updates=())
    work._issued, work._latest[work._slot(first)] = 2, 2  # as aggregate() did for both
    await work._aggregate(first, 1)
    assert submitted == [] and work.stale_skipped == 1
    await work._aggregate(second, 2)
    assert len(submitted) == 1 and not work._latest  # it ran, and left nothing behind


class _SlowBlobs:
    """A blob service whose fetches wait until released (then fail: nothing is stored)."""

    def __init__(self) -> None:
        self.release = trio.Event()

    async def fetch(self, key: str, **_: Any) -> Any:
        await self.release.wait()
        raise LookupError(key)


async def test_aggregations_shows_the_one_in_progress_and_those_waiting() -> None:
    submitted: list[Any] = []
    work = _work({("j", 3): True}, submitted)
    blobs = work.blobs = _SlowBlobs()
    async with trio.open_nursery() as n:
        for base in ("k1", "k2"):
            n.start_soon(work._aggregate, Aggregate(job="j", round=3, base_key=base, updates=()))
        await trio.testing.wait_all_tasks_blocked()
        (row,) = work.aggregations()
        assert (row["job"], row["round"], row["stage"], row["queued"]) == ("j", 3, "base model", 1)
        assert row["check_of"] is None and row["seconds"] >= 0
        blobs.release.set()
    assert work.aggregations() == [] and len(submitted) == 2  # both answered, nothing left
