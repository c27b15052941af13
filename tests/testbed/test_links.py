"""The testbed's link logic without I/O: delay, FIFO under jitter, seeded loss, token bucket."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode_simulations.testbed.links import MAX_FRAME, LinkSpec, LinkSpecError, Shaper

pytestmark = pytest.mark.timeout(60)


def test_a_perfect_link_releases_at_once() -> None:
    s = Shaper()
    d = s.offer(1500, 3.0, random.Random(0))
    assert d.release == 3.0 and d.drop is None


def test_delay_is_added_to_every_frame() -> None:
    s = Shaper(LinkSpec(delay=0.04))
    rng = random.Random(0)
    assert [s.offer(100, t, rng).release for t in (0.0, 0.5, 1.0)] == pytest.approx(
        [0.04, 0.54, 1.04]
    )


@given(
    gaps=st.lists(st.floats(0, 0.05), min_size=1, max_size=60),
    delay=st.floats(0, 0.2),
    frac=st.floats(0, 1),
    seed=st.integers(0, 2**32),
)
def test_jitter_never_reorders_a_link(
    gaps: list[float], delay: float, frac: float, seed: int
) -> None:
    """release = max(prev_release, now + delay + U(-jitter, +jitter)): FIFO, and never earlier
    than the lowest delay nor later than the highest delay after the previous frame."""
    jitter = delay * frac
    s = Shaper(LinkSpec(delay=delay, jitter=jitter))
    rng = random.Random(seed)
    now, prev = 0.0, float("-inf")
    for g in gaps:
        now += g
        r = s.offer(1000, now, rng).release
        assert r is not None
        assert r >= prev
        assert r >= now + delay - jitter - 1e-12
        assert r <= max(prev, now + delay + jitter) + 1e-12
        prev = r


def test_jitter_spreads_the_delay() -> None:
    s = Shaper(LinkSpec(delay=0.04, jitter=0.01))
    rng = random.Random(5)
    # Frames far apart: no queueing behind a late predecessor, so the spread is the jitter's.
    delays = [s.offer(100, t, rng).release - t for t in range(2000)]  # type: ignore[operator]
    assert min(delays) >= 0.03 and max(delays) <= 0.05
    assert max(delays) - min(delays) > 0.018
    assert sum(delays) / len(delays) == pytest.approx(0.04, abs=0.001)


def test_loss_rate_follows_the_setting_and_the_seed() -> None:
    def drops(seed: int) -> list[bool]:
        s = Shaper(LinkSpec(loss=0.1))
        rng = random.Random(seed)
        return [s.offer(100, i * 1e-3, rng).drop == "loss" for i in range(20_000)]

    a = drops(1)
    assert sum(a) / len(a) == pytest.approx(0.1, abs=0.01)
    assert drops(1) == a  # the same seed drops the same frames
    assert drops(2) != a


def test_the_token_bucket_passes_a_burst_then_paces_at_the_rate() -> None:
    rate = 1_000_000  # bytes/s: the burst is MAX_FRAME bytes (more than 5 ms' worth)
    s = Shaper(LinkSpec(rate=rate, queue=10_000_000))
    rng = random.Random(0)
    releases = [s.offer(1000, 0.0, rng).release for _ in range(1000)]
    burst = MAX_FRAME // 1000
    assert releases[:burst] == [0.0] * burst
    assert releases[burst] > 0
    # 1000 frames of 1000 bytes at 1 MB/s: the last leaves when the bytes past the burst are sent.
    assert releases[-1] == pytest.approx((1_000_000 - MAX_FRAME) / rate)
    gaps = [b - a for a, b in zip(releases[burst:], releases[burst + 1 :], strict=False)]
    assert all(g == pytest.approx(0.001) for g in gaps)


def test_the_token_bucket_refills_with_time() -> None:
    s = Shaper(LinkSpec(rate=100_000))
    rng = random.Random(0)
    for _ in range(MAX_FRAME // 1000):
        s.offer(1000, 0.0, rng)
    assert s.offer(1000, 0.0, rng).release > 0  # empty
    # After a second the bucket is full again (it never holds more than the burst).
    assert s.offer(1000, 1.0, rng).release == 1.0


def test_a_full_queue_drops_at_the_tail() -> None:
    s = Shaper(LinkSpec(rate=10_000, queue=5_000))
    rng = random.Random(0)
    out = [s.offer(1000, 0.0, rng) for _ in range(MAX_FRAME // 1000 + 10)]
    kept = [d for d in out if d.release is not None]
    dropped = [d for d in out if d.drop == "queue"]
    assert len(kept) == MAX_FRAME // 1000 + 5 and len(dropped) == 5
    assert out[-1].drop == "queue"  # the tail, not the head


def test_rate_and_delay_add_up() -> None:
    s = Shaper(LinkSpec(delay=0.04, rate=100_000, queue=1_000_000))
    rng = random.Random(0)
    last = None
    for _ in range(MAX_FRAME // 1000 + 100):
        last = s.offer(1000, 0.0, rng).release
    n = MAX_FRAME // 1000 + 100
    assert last == pytest.approx(0.04 + (n * 1000 - MAX_FRAME) / 100_000)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"delay": -1}, "delay"),
        ({"delay": float("nan")}, "delay"),
        ({"delay": 0.01, "jitter": 0.02}, "jitter"),
        ({"loss": 1.0}, "loss"),
        ({"loss": -0.1}, "loss"),
        ({"rate": 0}, "rate"),
        ({"rate": 1.5}, "rate"),
        ({"queue": 0}, "queue"),
        ({"delay": 60}, "delay"),
        ({"delay": True}, "delay"),
    ],
)
def test_bad_specs_say_which_field(kwargs: dict[str, object], word: str) -> None:
    with pytest.raises(LinkSpecError, match=word):
        LinkSpec(**kwargs)  # type: ignore[arg-type]


def test_specs_round_trip_and_refuse_unknown_keys() -> None:
    spec = LinkSpec(delay=0.04, jitter=0.01, loss=0.01, rate=1 << 20, queue=1 << 16)
    assert LinkSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(LinkSpecError, match="unknown"):
        LinkSpec.from_dict({"latency": 1})
    with pytest.raises(LinkSpecError, match="object"):
        LinkSpec.from_dict([1])
