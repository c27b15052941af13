"""Guards that keep a remote peer from stopping the daemon through py-libp2p callbacks."""

from __future__ import annotations

import trio

from p2pnode.network.host import guarded, guarded_validator


def test_a_raising_pubsub_validator_rejects_instead_of_raising() -> None:
    def buggy(forwarder: object, msg: object) -> bool:
        raise RuntimeError("validator bug")

    assert guarded_validator("hb", buggy)("peer", b"msg") is False
    assert guarded_validator("hb", lambda f, m: 1)("peer", b"msg") is True


class _Stream:
    """The two attributes a handler's guard touches on a failing stream."""

    def __init__(self) -> None:
        self.was_reset = False

    async def reset(self) -> None:
        self.was_reset = True


async def test_a_raising_stream_handler_is_contained_and_the_stream_reset() -> None:
    async def handler(stream: object) -> None:
        raise ValueError("peer sent something odd")

    stream = _Stream()
    await guarded("/p2pnode/test", handler)(stream)  # type: ignore[arg-type]
    assert stream.was_reset


async def test_cancellation_still_propagates_through_the_guard() -> None:
    async def handler(stream: object) -> None:
        await trio.sleep_forever()

    with trio.move_on_after(0.01) as scope:
        await guarded("/p2pnode/test", handler)(_Stream())  # type: ignore[arg-type]
    assert scope.cancelled_caught


def test_token_buckets_refuse_a_flood_and_refill_with_time() -> None:
    from p2pnode.network.ratelimit import TokenBuckets

    buckets = TokenBuckets(rate=10, burst=50)
    allowed = sum(buckets.allow("flooder", now=0.0) for _ in range(200))
    assert allowed == 50  # the burst, then nothing more at the same instant
    assert buckets.allow("someone-else", now=0.0)  # one peer's flood costs no one else
    assert sum(buckets.allow("flooder", now=1.0) for _ in range(100)) == 10  # 10 per second
    assert sum(buckets.allow("flooder", now=100.0) for _ in range(100)) == 50  # capped refill


def test_token_buckets_forget_idle_peers() -> None:
    from p2pnode.network.ratelimit import TokenBuckets

    buckets = TokenBuckets(rate=1, burst=2, max_peers=10)
    for i in range(11):
        buckets.allow(i, now=float(i))
    # The 11th peer overflows the table: peers idle long enough to be full again are dropped.
    assert set(buckets._buckets) == {9, 10}
