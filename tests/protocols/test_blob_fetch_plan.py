"""The sans-I/O plan of a blob fetch (``p2pnode_protocols.blobs.fetch``), driven without a network.

Unit tests walk single decisions: how batches spread over providers, what "not held", a bad
chunk, a broken stream or a stream that will not open costs, when a round is settled, and how
rounds back off and give up. A property test then drives whole rounds in orders hypothesis
picks, against providers that fail, hold only some chunks or corrupt some, and checks after
every step that each chunk is in exactly one place (so none is asked for twice at once), that
no provider is asked for a chunk refused from it, that strikes and batches stay within their
bounds, and at the end that nothing was lost, that rounds end, and that with one sound provider
every chunk was asked for.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode_protocols.blobs.fetch import (
    MAX_BACKOFF,
    Complete,
    FetchPlan,
    FetchRounds,
    Lane,
    NotFound,
    Retry,
)


def drain(lane: Lane[str]) -> list[list[int]]:
    """Every batch the lane asks for now (filling its pipeline)."""
    asked = []
    while (batch := lane.next_request()) is not None:
        asked.append(batch)
    return asked


def read_all(lane: Lane[str]) -> list[int]:
    """Read the lane's next batch, every chunk arriving."""
    batch = lane.next_read()
    assert batch is not None
    for index in batch:
        lane.received(index)
    return batch


# -- chunk assignment ------------------------------------------------------------------------


def test_batches_are_spread_over_providers_and_no_chunk_is_asked_twice() -> None:
    plan = FetchPlan[str](range(40), batch_size=4, pipeline=3)
    lanes = [plan.add_lane(p) for p in "abc"]
    asked = {}
    for lane in lanes:
        assert lane is not None
        asked[lane.peer] = drain(lane)
    assert asked == {
        "a": [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]],
        "b": [[12, 13, 14, 15], [16, 17, 18, 19], [20, 21, 22, 23]],
        "c": [[24, 25, 26, 27], [28, 29, 30, 31], [32, 33, 34, 35]],
    }
    assert list(plan.queue) == [36, 37, 38, 39]
    # A lane with room takes the next batch; the last one is short.
    a = lanes[0]
    assert a is not None
    assert read_all(a) == [0, 1, 2, 3]
    assert drain(a) == [[36, 37, 38, 39]]
    assert read_all(a) == [4, 5, 6, 7]
    assert drain(a) == []


def test_a_lane_starts_with_the_chunks_asked_with_the_manifest() -> None:
    plan = FetchPlan[str]([2, 3, 4], batch_size=2, pipeline=2)
    lane = plan.add_lane("a", [0, 1])
    assert lane is not None
    assert drain(lane) == [[2, 3]]
    assert lane.next_read() == [0, 1]


def test_a_provider_gets_one_lane_a_round() -> None:
    plan = FetchPlan[str](range(4), batch_size=2)
    assert plan.add_lane("a") is not None
    assert plan.add_lane("a") is None
    assert plan.live == 1


def test_a_round_takes_providers_until_it_runs_max_sources_lanes_at_once() -> None:
    plan = FetchPlan[str](range(10), batch_size=1, max_sources=2)
    a = plan.add_lane("a")
    assert a is not None and plan.wants_providers
    plan.lane_ended(a)  # one ended before the round was full: room for another
    assert plan.wants_providers
    assert plan.add_lane("b") is not None and plan.add_lane("c") is not None
    assert not plan.wants_providers
    with pytest.raises(RuntimeError):
        plan.add_lane("d")


# -- failures --------------------------------------------------------------------------------


def test_a_chunk_not_held_goes_to_another_provider() -> None:
    plan = FetchPlan[str](range(4), batch_size=2, pipeline=1)
    a, b = plan.add_lane("a"), plan.add_lane("b")
    assert a is not None and b is not None
    assert drain(a) == [[0, 1]]
    a.next_read()
    a.received(0)
    a.not_held(1)
    assert ("a", 1) in plan.refused
    assert drain(a) == [[2, 3]]  # the head of the queue, not 1 again
    assert list(plan.queue) == [1]
    read_all(a)
    assert drain(a) == []  # only a chunk it does not hold is left
    assert a.next_read() is None  # done: nothing asked for
    assert list(plan.queue) == [1]
    assert drain(b) == [[1]]


def test_a_bad_chunk_is_refused_from_its_sender_only() -> None:
    plan = FetchPlan[str](range(2), batch_size=2)
    a = plan.add_lane("a")
    assert a is not None
    drain(a)
    read_all(a)
    plan.bad_chunk("a", 1)
    assert drain(a) == []
    b = plan.add_lane("b")
    assert b is not None
    assert drain(b) == [[1]]


def test_a_chunk_our_disk_failed_to_store_is_asked_again_of_anyone() -> None:
    plan = FetchPlan[str](range(1), batch_size=1)
    a = plan.add_lane("a")
    assert a is not None
    drain(a)
    read_all(a)
    plan.store_failed(0)
    assert drain(a) == [[0]]


def test_a_broken_stream_refuses_what_was_being_read_and_returns_what_was_asked() -> None:
    plan = FetchPlan[str](range(6), batch_size=2, pipeline=3)
    a = plan.add_lane("a")
    assert a is not None
    assert drain(a) == [[0, 1], [2, 3], [4, 5]]
    a.next_read()
    a.received(0)
    a.read_failed(maybe_stale=False)
    assert a.strikes == 1 and a.active
    assert ("a", 1) in plan.refused and ("a", 0) not in plan.refused
    assert list(plan.queue) == [1, 2, 3, 4, 5]
    assert drain(a) == [[2, 3], [4, 5]]  # 1 is skipped and put back at the tail
    assert list(plan.queue) == [1]


def test_a_stale_kept_stream_costs_no_strike_unless_something_arrived() -> None:
    plan = FetchPlan[str](range(4), batch_size=2, pipeline=1)
    a = plan.add_lane("a")
    assert a is not None
    drain(a)
    a.next_read()
    a.read_failed(maybe_stale=True)  # nothing arrived: the stream had gone stale
    assert a.strikes == 0
    assert drain(a) == [[2, 3]]
    a.next_read()
    a.received(2)
    a.read_failed(maybe_stale=True)  # something arrived: the provider broke it
    assert a.strikes == 1


def test_a_provider_sits_out_the_round_after_max_strikes() -> None:
    plan = FetchPlan[str](range(20), batch_size=1, pipeline=1, max_strikes=3)
    a = plan.add_lane("a")
    assert a is not None
    for _ in range(3):
        assert a.active
        drain(a)
        a.next_read()
        a.read_failed(maybe_stale=False)
    assert not a.active
    assert not plan.lane_ended(a)  # chunks are left: the round waits for other providers
    assert sorted(plan.queue) == list(range(20))


def test_a_stream_that_does_not_open_ends_the_lane_and_returns_its_chunks() -> None:
    plan = FetchPlan[str](range(3), batch_size=2)
    a = plan.add_lane("a")
    assert a is not None
    assert a.next_request() == [0, 1]  # asked for before the stream is opened
    a.open_failed()
    assert not a.active
    a.release()
    assert sorted(plan.queue) == [0, 1, 2]
    assert not plan.refused  # the provider is out, but the chunks are not barred from it


def test_when_every_provider_is_gone_nothing_is_lost_and_the_round_ends_incomplete() -> None:
    plan = FetchPlan[str](range(8), batch_size=2, pipeline=2, max_strikes=2)
    lanes = [plan.add_lane(p) for p in "ab"]
    for lane in lanes:
        assert lane is not None
        while lane.active:
            drain(lane)
            lane.next_read()
            lane.read_failed(maybe_stale=False)
    assert [plan.lane_ended(lane) for lane in lanes if lane is not None] == [False, False]
    assert sorted(plan.queue) == list(range(8)) and plan.live == 0 and not plan.settled
    rounds = FetchRounds(now=0.0, find_timeout=30.0, have_manifest=True)
    assert rounds.round_ended(complete=False, found=True, now=1.0) == Retry(delay=0.1)


def test_a_round_is_settled_when_its_last_lane_ends_with_nothing_left() -> None:
    plan = FetchPlan[str](range(2), batch_size=2)
    a, b = plan.add_lane("a"), plan.add_lane("b")
    assert a is not None and b is not None
    drain(a)
    read_all(a)
    assert a.next_read() is None
    assert not plan.lane_ended(a)  # b is still running
    assert b.next_read() is None
    assert plan.lane_ended(b)
    with pytest.raises(RuntimeError):
        plan.lane_ended(b)


# -- rounds ----------------------------------------------------------------------------------


def test_rounds_back_off_doubling_up_to_the_maximum() -> None:
    rounds = FetchRounds(now=0.0, find_timeout=30.0, have_manifest=False)
    assert rounds.trust_local
    delays = []
    for t in range(8):
        end = rounds.round_ended(complete=False, found=True, now=float(t))
        assert isinstance(end, Retry)
        delays.append(end.delay)
        assert not rounds.trust_local  # only the first round may skip the lookup
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, MAX_BACKOFF, MAX_BACKOFF, MAX_BACKOFF]
    assert rounds.round_ended(complete=True, found=True, now=100.0) == Complete()


def test_a_fetch_that_finds_no_provider_fails_after_find_timeout() -> None:
    rounds = FetchRounds(now=10.0, find_timeout=30.0, have_manifest=False)
    assert isinstance(rounds.round_ended(complete=False, found=False, now=39.9), Retry)
    assert rounds.round_ended(complete=False, found=False, now=40.0) == NotFound()


@pytest.mark.parametrize(("found", "have_manifest"), [(True, False), (False, True)])
def test_a_fetch_that_found_a_provider_or_had_the_manifest_is_not_given_up(
    found: bool, have_manifest: bool
) -> None:
    rounds = FetchRounds(now=0.0, find_timeout=30.0, have_manifest=have_manifest)
    rounds.round_ended(complete=False, found=found, now=1.0)
    end = rounds.round_ended(complete=False, found=False, now=1000.0)
    assert isinstance(end, Retry)


def test_a_negative_retry_delay_is_refused() -> None:
    with pytest.raises(ValueError):
        Retry(delay=-1.0)


# -- whole rounds, in orders hypothesis picks --------------------------------------------------


@dataclass(frozen=True)
class Provider:
    name: str
    holds: frozenset[int]  # chunks it answers (others: "not held")
    corrupts: frozenset[int] = frozenset()  # chunks it sends wrong
    flaky: bool = False  # its stream may break at any chunk
    opens: bool = True  # a stream to it can be opened


@dataclass
class RoundLog:
    requested: Counter[tuple[str, int]] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # failed reads, per provider
    free_failures: Counter[str] = field(default_factory=Counter)  # those that cost no strike
    store_failures: Counter[int] = field(default_factory=Counter)
    laned: list[str] = field(default_factory=list)
    steps: int = 0


def faulty_provider(n_chunks: int) -> st.SearchStrategy[Provider]:
    chunks = st.frozensets(st.integers(0, n_chunks - 1))
    return st.builds(
        Provider,
        name=st.just(""),
        holds=chunks,
        corrupts=chunks,
        flaky=st.booleans(),
        opens=st.booleans(),
    )


class RoundDriver:
    """Runs one round as ``Fetcher._download`` does, with hypothesis choosing what happens
    next: a provider found, a lane's turn, a chunk's check finishing, a stream breaking."""

    def __init__(
        self,
        data: st.DataObject,
        missing: list[int],
        found: list[Provider],
        *,
        disk_fails: bool = True,
    ) -> None:
        self.data = data
        self.missing = list(missing)
        self.plan = FetchPlan[str](missing, batch_size=3, pipeline=2, max_sources=4)
        self.sources = list(found)
        self.by_name = {p.name: p for p in found}
        self.disk_fails = disk_fails
        self.finding = True  # the loop waiting for the next provider is running
        self.lanes: list[Lane[str]] = []
        self.checking: dict[str, list[int]] = {}  # chunks received, being checked, per lane
        self.done: set[int] = set()
        self.log = RoundLog()

    def run(self) -> set[int]:
        while self.finding or self.lanes:
            self.log.steps += 1
            assert self.log.steps < 20_000, "the round does not end"
            choices: list[tuple[str, Lane[str] | None]] = [("find", None)] if self.finding else []
            choices += [("lane", lane) for lane in self.lanes]
            choices += [("check", lane) for lane in self.lanes if self.checking[lane.peer]]
            kind, lane = self.data.draw(st.sampled_from(choices))
            if kind == "find":
                self.find()
            elif kind == "check":
                assert lane is not None
                self.check(lane)
            else:
                assert lane is not None
                self.turn(lane)
            self.check_invariants()
        assert set(self.plan.queue) | self.done == set(self.missing)
        assert not set(self.plan.queue) & self.done
        return self.done

    def find(self) -> None:
        if not self.sources or self.plan.settled:
            self.finding = False
            return
        provider = self.sources.pop(0)
        lane = self.plan.add_lane(provider.name)
        assert lane is not None
        self.lanes.append(lane)
        self.log.laned.append(lane.peer)
        self.checking[lane.peer] = []
        self.finding = self.plan.wants_providers

    def check(self, lane: Lane[str]) -> None:
        index = self.checking[lane.peer].pop(0)
        if index in self.by_name[lane.peer].corrupts:
            self.plan.bad_chunk(lane.peer, index)
        elif self.disk_fails and self.data.draw(st.integers(0, 9)) == 0:  # now and then
            self.log.store_failures[index] += 1
            self.plan.store_failed(index)
        else:
            self.done.add(index)

    def turn(self, lane: Lane[str]) -> None:
        """One turn of the lane's loop: fill its pipeline, read one batch."""
        provider = self.by_name[lane.peer]
        if not lane.active:
            return self.end(lane)
        while (batch := lane.next_request()) is not None:
            assert 0 < len(batch) <= self.plan.batch_size
            assert len(lane.asked) <= self.plan.pipeline
            for index in batch:
                assert (lane.peer, index) not in self.plan.refused
                self.log.requested[(lane.peer, index)] += 1
            if not provider.opens:
                lane.open_failed()
                return self.end(lane)
        batch = lane.next_read()
        if batch is None:
            return self.end(lane)
        stale = self.data.draw(st.booleans())  # the stream was kept from an earlier fetch
        for index in batch:
            if provider.flaky and self.data.draw(st.booleans()):
                strikes = lane.strikes
                lane.read_failed(maybe_stale=stale)
                self.log.failures[lane.peer] += 1
                self.log.free_failures[lane.peer] += lane.strikes == strikes
                break
            if index in provider.holds:
                lane.received(index)
                self.checking[lane.peer].append(index)
            else:
                lane.not_held(index)
        return None

    def end(self, lane: Lane[str]) -> None:
        """The lane's nursery waits for its checks, then the lane ends."""
        while self.checking[lane.peer]:
            self.check(lane)
        lane.release()
        self.lanes.remove(lane)
        if self.plan.lane_ended(lane):
            self.finding = False

    def check_invariants(self) -> None:
        places: Counter[int] = Counter(self.plan.queue)
        places.update(self.done)
        for lane in self.lanes:
            for batch in lane.asked:
                places.update(batch)
            places.update(lane.reading)
            places.update(self.checking[lane.peer])
            assert lane.strikes <= self.plan.max_strikes
        # Every chunk is in exactly one place: never asked for twice at once, never lost.
        assert places == Counter(self.missing)


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    n_chunks=st.integers(1, 30),
    with_sound=st.booleans(),
    n_faulty=st.integers(0, 5),
)
def test_whole_rounds_keep_every_chunk_in_one_place_and_end(
    data: st.DataObject, n_chunks: int, with_sound: bool, n_faulty: int
) -> None:
    found = [data.draw(faulty_provider(n_chunks)) for _ in range(n_faulty)]
    if with_sound:
        found.insert(data.draw(st.integers(0, n_faulty)), Provider("", frozenset(range(n_chunks))))
    found = [replace(p, name=f"p{i}") for i, p in enumerate(found)]
    missing = list(range(n_chunks))
    driver = RoundDriver(data, missing, found)
    driver.run()
    plan, log = driver.plan, driver.log
    # Retries are bounded: a provider is asked for a chunk again only after a failed read (at
    # most max_strikes of them, plus stale streams, each of which refuses a chunk) or after our
    # disk failed to store it; never once it was refused.
    for peer, failures in log.failures.items():
        assert failures - log.free_failures[peer] <= plan.max_strikes
        assert log.free_failures[peer] <= n_chunks
    for (peer, index), times in log.requested.items():
        assert times <= 1 + log.failures[peer] + log.store_failures[index]
    # With a sound provider's lane in the round, every chunk is asked for at least once.
    whole = Provider("", frozenset(missing))
    sound = {p.name for p in found if replace(p, name="") == whole}
    if sound & set(log.laned):
        assert {index for _, index in log.requested} == set(missing)
    if not found:
        assert sorted(plan.queue) == missing  # nobody to ask: all still missing


@settings(max_examples=50, deadline=None)
@given(data=st.data(), n_chunks=st.integers(1, 40))
def test_one_sound_provider_alone_completes_the_round(data: st.DataObject, n_chunks: int) -> None:
    sound = Provider("p0", frozenset(range(n_chunks)))
    driver = RoundDriver(data, list(range(n_chunks)), [sound], disk_fails=False)
    assert driver.run() == set(range(n_chunks))
