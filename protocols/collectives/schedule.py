"""Who sends which shard to whom, step by step, in an all-reduce: pure plans, no I/O.

An all-reduce over ``n`` ranks cuts the array into ``n`` contiguous shards (:func:`shards`) and
each shard into parts of bounded size (:func:`parts`) for the wire. A *plan* is the list of
:class:`Transfer` steps one rank carries out, in order; the service moves the bytes.

- :func:`ring_plan`: the bandwidth-optimal ring (reduce-scatter then all-gather, ``n - 1`` steps
  each). Every rank sends and receives ``2 (n - 1) / n`` of the array; ``2 (n - 1)`` latencies.
- :func:`butterfly_plan`: Hivemind's all-to-all reduce-scatter by shard (rank ``j`` reduces
  shard ``j``), then an all-to-all gather. The same bytes as the ring in 2 steps, but each rank
  talks to every other one at once, so it suits small groups (:func:`choose_algorithm`).

Semantics every plan obeys (and the tests simulate): within one ``(phase, step)`` a rank's sends
read its shard values as they stood at the start of the step, and its receives are applied
after; ``accumulate`` adds the received values into the shard, otherwise they replace it. A send
in a plan always has exactly one matching receive in the peer's plan (same phase, step, shard).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

__all__ = [
    "Algorithm",
    "Phase",
    "Transfer",
    "butterfly_plan",
    "choose_algorithm",
    "owner_butterfly",
    "owner_ring",
    "parts",
    "ring_plan",
    "shards",
]


class Phase(IntEnum):
    """The phase a transfer (and a part on the wire) belongs to."""

    #: partial sums travel and are accumulated; each shard ends fully reduced on one rank
    REDUCE_SCATTER = 0
    #: fully reduced shards travel and replace the stale copies
    ALL_GATHER = 1
    #: small arrays: every rank sends its whole array to every other rank
    DIRECT = 2
    #: a root's array goes to everyone
    BROADCAST = 3


class Algorithm(StrEnum):
    RING = "ring"
    BUTTERFLY = "butterfly"
    DIRECT = "direct"


@dataclass(frozen=True, slots=True)
class Transfer:
    """One step of one rank's plan: send ``send_shard`` to each rank of ``send_to`` and receive
    ``recv_shard`` from each rank of ``recv_from`` (``()`` and ``None`` when a side is idle)."""

    phase: Phase
    step: int
    send_to: tuple[int, ...]
    send_shard: int | None
    recv_from: tuple[int, ...]
    recv_shard: int | None
    #: True: received values are added to the shard; False: they replace it
    accumulate: bool

    def __post_init__(self) -> None:
        if not isinstance(self.phase, Phase):
            raise ValueError("phase must be a Phase")
        if type(self.step) is not int or self.step < 0:
            raise ValueError("step must be an int >= 0")
        for ranks, shard, side in (
            (self.send_to, self.send_shard, "send"),
            (self.recv_from, self.recv_shard, "recv"),
        ):
            if type(ranks) is not tuple or any(type(r) is not int or r < 0 for r in ranks):
                raise ValueError(f"{side} ranks must be a tuple of ints >= 0")
            if (shard is None) != (not ranks):
                raise ValueError(f"{side}_shard is None exactly when there is no {side} peer")
            if shard is not None and (type(shard) is not int or shard < 0):
                raise ValueError(f"{side}_shard must be an int >= 0")


def _check_n(n: int) -> None:
    if type(n) is not int or n < 1:
        raise ValueError(f"group size must be an int >= 1, not {n!r}")


def _check_rank(rank: int, n: int) -> None:
    _check_n(n)
    if type(rank) is not int or not 0 <= rank < n:
        raise ValueError(f"rank must be an int in 0..{n - 1}, not {rank!r}")


def shards(length: int, n: int) -> list[tuple[int, int]]:
    """``n`` contiguous ``[start, stop)`` ranges covering ``[0, length)`` in order. Sizes differ
    by at most one, the first ``length % n`` ranges get the extra element, and ranges are empty
    when ``length < n``."""
    _check_n(n)
    if type(length) is not int or length < 0:
        raise ValueError(f"length must be an int >= 0, not {length!r}")
    base, extra = divmod(length, n)
    out: list[tuple[int, int]] = []
    start = 0
    for i in range(n):
        stop = start + base + (1 if i < extra else 0)
        out.append((start, stop))
        start = stop
    return out


def parts(start: int, stop: int, part_len: int) -> list[tuple[int, int]]:
    """``[start, stop)`` cut into consecutive ranges of at most ``part_len`` elements; ``[]`` for
    an empty range."""
    if type(part_len) is not int or part_len < 1:
        raise ValueError(f"part_len must be an int >= 1, not {part_len!r}")
    if type(start) is not int or type(stop) is not int or not 0 <= start <= stop:
        raise ValueError(f"need ints 0 <= start <= stop, not {start!r}, {stop!r}")
    return [(a, min(a + part_len, stop)) for a in range(start, stop, part_len)]


def ring_plan(rank: int, n: int) -> list[Transfer]:
    """The ring all-reduce for ``rank``: ``n - 1`` reduce-scatter steps, then ``n - 1``
    all-gather steps, each sending one shard to the next rank and receiving one from the
    previous rank. After the reduce-scatter, ``rank`` holds shard ``(rank + 1) % n`` fully
    reduced (:func:`owner_ring`). ``[]`` when ``n == 1``."""
    _check_rank(rank, n)
    nxt, prv = (rank + 1) % n, (rank - 1) % n
    plan = [
        Transfer(
            phase=Phase.REDUCE_SCATTER,
            step=s,
            send_to=(nxt,),
            send_shard=(rank - s) % n,
            recv_from=(prv,),
            recv_shard=(rank - s - 1) % n,
            accumulate=True,
        )
        for s in range(n - 1)
    ]
    plan += [
        Transfer(
            phase=Phase.ALL_GATHER,
            step=s,
            send_to=(nxt,),
            send_shard=(rank + 1 - s) % n,
            recv_from=(prv,),
            recv_shard=(rank - s) % n,
            accumulate=False,
        )
        for s in range(n - 1)
    ]
    return plan


def butterfly_plan(rank: int, n: int) -> list[Transfer]:
    """Hivemind's butterfly all-reduce for ``rank``, as **one Transfer per peer**:

    - step 0 (``REDUCE_SCATTER``), for each other rank ``j``: send shard ``j`` to ``j`` and
      receive shard ``rank`` from ``j``, accumulating;
    - step 1 (``ALL_GATHER``), for each other rank ``j``: send shard ``rank`` (now fully
      reduced, :func:`owner_butterfly`) to ``j`` and receive shard ``j`` from ``j``, replacing.

    The transfers of one step are independent (they may run concurrently). They are listed with
    peers in the order ``rank + 1, rank + 2, ...`` (mod ``n``) so that, if a service works
    through them in order, the ranks start on different peers rather than all on rank 0.
    ``[]`` when ``n == 1``.
    """
    _check_rank(rank, n)
    peers = [(rank + k) % n for k in range(1, n)]
    plan = [
        Transfer(
            phase=Phase.REDUCE_SCATTER,
            step=0,
            send_to=(j,),
            send_shard=j,
            recv_from=(j,),
            recv_shard=rank,
            accumulate=True,
        )
        for j in peers
    ]
    plan += [
        Transfer(
            phase=Phase.ALL_GATHER,
            step=1,
            send_to=(j,),
            send_shard=rank,
            recv_from=(j,),
            recv_shard=j,
            accumulate=False,
        )
        for j in peers
    ]
    return plan


def owner_ring(shard: int, n: int) -> int:
    """The rank holding ``shard`` fully reduced after the ring's reduce-scatter."""
    _check_rank(shard, n)
    return (shard - 1) % n


def owner_butterfly(shard: int, n: int) -> int:
    """The rank holding ``shard`` fully reduced after the butterfly's reduce-scatter."""
    _check_rank(shard, n)
    return shard


#: above this many ranks the butterfly's n - 1 simultaneous streams per rank cost more than
#: the ring's extra latencies
BUTTERFLY_MAX_N = 8


def choose_algorithm(nbytes: int, n: int, *, direct_below: int = 64 * 1024) -> Algorithm:
    """The all-reduce algorithm for an array of ``nbytes`` over ``n`` ranks.

    - ``DIRECT`` below ``direct_below`` bytes (one round of whole arrays beats two of shards
      when latency dominates), and for ``n == 1`` (nothing to shard);
    - ``BUTTERFLY`` for ``2 <= n <= 8`` (the same bytes as the ring in 2 steps instead of
      ``2 (n - 1)``; at ``n == 2`` the two are the same exchange);
    - ``RING`` above 8 ranks.
    """
    _check_n(n)
    if type(nbytes) is not int or nbytes < 0:
        raise ValueError(f"nbytes must be an int >= 0, not {nbytes!r}")
    if type(direct_below) is not int or direct_below < 0:
        raise ValueError(f"direct_below must be an int >= 0, not {direct_below!r}")
    if n == 1 or nbytes < direct_below:
        return Algorithm.DIRECT
    if n <= BUTTERFLY_MAX_N:
        return Algorithm.BUTTERFLY
    return Algorithm.RING
