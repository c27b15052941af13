"""The scheduling decisions of a blob fetch, without I/O: which chunks to ask which provider
for, what a failure costs a provider, and when a fetch looks for providers again.

``p2pnode.blobs.fetcher`` drives these objects over the network; a test drives them with
scripted providers. Nothing here touches a stream, a clock or a random generator: time comes
in as arguments, and the order providers are offered in is the caller's.

A fetch is a series of rounds (``FetchRounds``). In a round, the chunks still missing wait in
one shared queue (``FetchPlan``); each provider found gets a lane (``Lane``, at most
``max_sources`` at once) that takes batches from the queue and keeps ``pipeline`` of them asked
for on its one stream, so a faster provider takes more. A chunk is in exactly one place: the
queue, a lane's batches asked for, the batch a lane is reading, or with the caller (received,
being checked and written). Whatever goes wrong puts the chunk back in the queue:

* the provider says it does not hold the chunk, or sends a chunk that does not match its hash,
  or the stream breaks before the chunk arrives: the chunk is refused from that provider for
  the rest of the round (``refused``), and a broken stream also counts a strike against the
  provider (not if it was a stream kept from an earlier fetch that brought nothing: it may
  only have gone stale). After ``max_strikes`` the lane sits out the round;
* our own disk fails to store the chunk: it goes back unrefused (the provider is not to blame).

A lane ends when it struck out or when it has nothing asked for and nothing it may take. A round
needs no more providers once no lane is left and the queue is empty (``settled``). The rounds
repeat with a doubling backoff until the blob is complete, or fail as not found when no round
has found any provider for ``find_timeout``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = [
    "FIRST_BACKOFF",
    "MAX_BACKOFF",
    "MAX_SOURCES",
    "MAX_STRIKES",
    "PIPELINE",
    "Complete",
    "FetchPlan",
    "FetchRounds",
    "Lane",
    "NotFound",
    "Retry",
    "RoundEnd",
]

# Batches asked for ahead on a provider's one stream. One stream kept full costs less CPU per
# MiB at both ends than two streams taking turns (the yamux write lock, twice the wakeups):
# 256 MiB on this 2-core VM, provider 2.4 -> 1.9-2.2 ms/MiB, fetcher's event loop 3.1 -> 2.7.
PIPELINE = 3
# Providers fetched from at once. Each stream may buffer up to yamux's 16 MiB window while our
# chunk checks lag, so this bounds a fetch's memory as well as its connections.
MAX_SOURCES = 6
MAX_STRIKES = 3  # failed batches after which a provider sits out the round
FIRST_BACKOFF = 0.1  # seconds between the first round and the second, doubled each round
MAX_BACKOFF = 2.0

P = TypeVar("P", bound=Hashable)  # a provider: any hashable name (a peer id in the daemon)


class FetchPlan(Generic[P]):
    """One round's chunks and the lanes taking them.

    The caller adds a lane per provider as providers are found (``add_lane``, while
    ``wants_providers``), runs each lane (see ``Lane``), reports chunks that failed their
    check or could not be stored (``bad_chunk``, ``store_failed``), and ends each lane with
    ``lane_ended``, which says whether the round is settled.
    """

    def __init__(
        self,
        missing: Iterable[int],
        *,
        batch_size: int,
        max_sources: int = MAX_SOURCES,
        pipeline: int = PIPELINE,
        max_strikes: int = MAX_STRIKES,
    ) -> None:
        if batch_size < 1 or max_sources < 1 or pipeline < 1 or max_strikes < 1:
            raise ValueError("batch size, sources, pipeline and strikes must be at least 1")
        self.queue: deque[int] = deque(missing)  #: chunks to take, shared by all lanes
        self.refused: set[tuple[P, int]] = set()  #: (provider, chunk) pairs that went wrong
        self.batch_size = batch_size
        self.max_sources = max_sources
        self.pipeline = pipeline
        self.max_strikes = max_strikes
        self.live = 0  #: lanes added and not yet ended
        self._full = False  # max_sources lanes ran at once
        self._peers: set[P] = set()  # providers given a lane this round

    @property
    def wants_providers(self) -> bool:
        """Whether the round takes another provider: until ``max_sources`` lanes run at once.
        Once they have, it takes no more, even as lanes end: those providers were the first
        found, and the rest of the round is theirs."""
        return not self._full

    @property
    def settled(self) -> bool:
        """No lane is running and nothing is left to take: a new provider has nothing to do."""
        return not (self.live or self.queue)

    def add_lane(self, peer: P, first: Sequence[int] = ()) -> Lane[P] | None:
        """A lane for ``peer``, or None if it already had one this round. ``first``: chunks
        already asked of it (with the manifest), which are not in the queue."""
        if peer in self._peers:
            return None
        if self._full:
            raise RuntimeError(f"the round took its {self.max_sources} providers already")
        self._peers.add(peer)
        self.live += 1
        self._full = self.live >= self.max_sources
        lane = Lane(self, peer)
        if first:
            lane.asked.append(list(first))
        return lane

    def lane_ended(self, lane: Lane[P]) -> bool:
        """``lane`` is done (whatever it still held is back in the queue); returns whether the
        round is now settled."""
        if lane.ended:
            raise RuntimeError(f"the lane of {lane.peer!r} ended twice")
        lane.release()
        lane.ended = True
        self.live -= 1
        return self.settled

    def bad_chunk(self, peer: P, index: int) -> None:
        """``peer`` sent chunk ``index`` and it did not match its hash."""
        self.refused.add((peer, index))
        self.queue.append(index)

    def store_failed(self, index: int) -> None:
        """Chunk ``index`` arrived but our disk could not take it: it is fetched again, from
        whichever provider takes it."""
        self.queue.append(index)

    def _take(self, peer: P) -> list[int]:
        """Up to ``batch_size`` chunks from the head of the queue that ``peer`` may be asked
        for; those it may not are put back at the tail."""
        batch: list[int] = []
        skipped: list[int] = []
        queue, refused, size = self.queue, self.refused, self.batch_size
        while queue and len(batch) < size:
            index = queue.popleft()
            (skipped if (peer, index) in refused else batch).append(index)
        queue.extend(skipped)
        return batch


class Lane(Generic[P]):
    """The batches asked of one provider in a round, in the order asked.

    Driving a lane: while it is ``active``, ask for every batch ``next_request`` gives (on one
    stream, opened on the first; if it cannot be opened, ``open_failed``), then read the batch
    ``next_read`` gives (None: nothing asked for, the lane is finished), reporting each chunk as
    it arrives (``received``) or is not held (``not_held``), or the whole read's failure
    (``read_failed``). ``release`` puts back what the lane still holds when it stops early.
    """

    def __init__(self, plan: FetchPlan[P], peer: P) -> None:
        self.plan = plan
        self.peer = peer
        self.strikes = 0
        self.asked: deque[list[int]] = deque()  #: batches asked for, not yet being read
        self.batch: list[int] = []  #: the batch being read
        self.reading: list[int] = []  #: its chunks that have not arrived yet
        self.ended = False

    @property
    def active(self) -> bool:
        return self.strikes < self.plan.max_strikes

    def next_request(self) -> list[int] | None:
        """The next batch to ask for, or None when ``pipeline`` batches are asked for already
        or nothing is left that this provider may be asked for."""
        plan = self.plan
        if len(self.asked) >= plan.pipeline or not plan.queue:
            return None
        batch = plan._take(self.peer)
        if not batch:
            return None
        self.asked.append(batch)
        return batch

    def open_failed(self) -> None:
        """No stream to the provider could be opened: it sits out the round."""
        self.strikes = self.plan.max_strikes

    def next_read(self) -> list[int] | None:
        """The oldest batch asked for, now to be read; None if none is (the lane is done)."""
        if not self.asked:
            return None
        self.batch = self.asked.popleft()
        self.reading = list(self.batch)
        return self.batch

    def received(self, index: int) -> None:
        """Chunk ``index`` of the batch being read arrived (the caller checks and stores it)."""
        self.reading.remove(index)

    def not_held(self, index: int) -> None:
        """The provider answered chunk ``index`` with "not held"."""
        self.reading.remove(index)
        self.plan.refused.add((self.peer, index))
        self.plan.queue.append(index)

    def read_failed(self, *, maybe_stale: bool) -> None:
        """The batch's read failed (the stream broke, timed out or carried something wrong);
        the stream is to be dropped. ``maybe_stale``: it was kept from an earlier fetch, and a
        read that brought nothing at all on it costs no strike (the provider may have
        restarted since). Every batch still asked for goes back in the queue, not refused."""
        plan = self.plan
        for index in self.reading:
            plan.refused.add((self.peer, index))
            plan.queue.append(index)
        received = len(self.batch) - len(self.reading)
        self.reading = []
        if not (maybe_stale and received == 0):
            self.strikes += 1
        while self.asked:
            plan.queue.extend(self.asked.popleft())

    def release(self) -> None:
        """Put back whatever the lane still holds (it is stopping: struck out, cancelled)."""
        queue = self.plan.queue
        queue.extend(self.reading)
        self.reading = []
        while self.asked:
            queue.extend(self.asked.popleft())


# -- rounds -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Complete:
    """The blob is whole: the fetch is done."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NotFound:
    """No round found any provider within ``find_timeout``: the fetch fails."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """Wait ``delay`` seconds, then run another round (which looks providers up again)."""

    delay: float

    def __post_init__(self) -> None:
        if not self.delay >= 0:
            raise ValueError(f"a retry delay of {self.delay!r}")


RoundEnd = Complete | NotFound | Retry


class FetchRounds:
    """When a fetch runs another round, and whether that round may trust local records.

    The first round may take the provider records this node holds (as a replica of the key)
    instead of a lookup (``trust_local``); later rounds always look up, since a provider may
    have come or gone. ``have_manifest``: the manifest was already held when the fetch began,
    which counts as having found a provider (the blob exists; only the fetch timeout ends it).
    """

    def __init__(
        self,
        *,
        now: float,
        find_timeout: float,
        have_manifest: bool,
        first_backoff: float = FIRST_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        self.give_up = now + find_timeout
        self.found_any = have_manifest
        self.backoff = first_backoff
        self.max_backoff = max_backoff
        self.rounds = 0  #: rounds ended so far

    @property
    def trust_local(self) -> bool:
        return self.rounds == 0

    def round_ended(self, *, complete: bool, found: bool, now: float) -> RoundEnd:
        """What follows a round: ``complete``, the blob is whole; ``found``, the round found at
        least one provider; ``now``, the caller's clock (the one ``now`` at creation was on)."""
        self.rounds += 1
        if complete:
            return Complete()
        self.found_any = self.found_any or found
        if not self.found_any and now >= self.give_up:
            return NotFound()
        delay = self.backoff
        self.backoff = min(self.backoff * 2, self.max_backoff)
        return Retry(delay=delay)
