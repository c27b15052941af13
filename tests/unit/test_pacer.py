"""The upload pacer: bursts up to its slack, then the long-run rate, callers in call order."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.network.ratelimit import Pacer


def test_burst_then_wait_in_call_order() -> None:
    p = Pacer(rate=100.0, burst=50.0)
    assert p.reserve(50, 0.0) == 0.0
    assert p.reserve(50, 0.0) == pytest.approx(0.5)
    assert p.reserve(100, 0.0) == pytest.approx(1.5)
    assert p.reserve(10, 10.0) == 0.0, "idle time refills the bucket up to the burst"


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=60),
    gaps=st.lists(st.floats(min_value=0, max_value=2), min_size=60, max_size=60),
)
def test_long_run_rate_never_exceeded(sizes: list[int], gaps: list[float]) -> None:
    rate, burst = 1000.0, 2000.0
    p = Pacer(rate=rate, burst=burst)
    now = 0.0
    sends = []  # (time the caller may send, units)
    for size, gap in zip(sizes, gaps, strict=False):
        now += gap
        sends.append((now + p.reserve(size, now), size))
    # Over any window [start of send i, send j], what went out fits rate x window + burst.
    for i in range(len(sends)):
        total = 0
        for j in range(i, len(sends)):
            total += sends[j][1]
            window = sends[j][0] - sends[i][0]
            assert total <= rate * window + burst + sends[i][1] + 1e-6


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        Pacer(rate=0, burst=1)
