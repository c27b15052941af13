"""Repeated warnings are rate-limited per topic (the log must not fill a full disk)."""

from __future__ import annotations

import logging

import pytest

from p2pnode.blobs import ratelog
from p2pnode.blobs.ratelog import RateLimitedLog


def test_a_burst_per_interval_then_one_line_counting_the_rest(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monkeypatch.setattr(ratelog.time, "monotonic", lambda: now[0])
    limited = RateLimitedLog(logging.getLogger("t"), burst=3, interval=60)
    with caplog.at_level(logging.WARNING, logger="t"):
        sent = [limited.warning("store", "cannot store chunk %d", i) for i in range(1000)]
        assert limited.warning("corrupt", "another topic")  # its own budget
        now[0] += 61
        assert limited.warning("store", "cannot store chunk %d", 1000)
    assert sent.count(True) == 3
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "cannot store chunk 0",
        "cannot store chunk 1",
        "cannot store chunk 2",
        "another topic",
        "997 more warnings like the next were not logged in 61 s",
        "cannot store chunk 1000",
    ]
