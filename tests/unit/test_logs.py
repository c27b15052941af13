"""The dial-failure summary: a dead peer costs one log line a minute, not a few a second."""

from __future__ import annotations

import logging

import pytest

from p2pnode.logs import DialFailureSummary

pytestmark = pytest.mark.timeout(10)


def dial_failure(at: float, port: int = 4001) -> logging.LogRecord:
    record = logging.LogRecord(
        "libp2p.transport.tcp.tcp",
        logging.ERROR,
        __file__,
        1,
        "Failed to open TCP stream: %s",
        (OSError(f"all attempts to connect to 127.0.0.1:{port} failed"),),
        None,
    )
    record.created = at
    return record


def test_first_failure_is_a_warning_then_one_summary_per_window() -> None:
    f = DialFailureSummary(window=60.0)
    first = dial_failure(0.0)
    assert f.filter(first)
    assert first.levelname == "WARNING"
    assert "127.0.0.1:4001" in first.getMessage()
    # Three a second for a minute: none passes.
    passed = [f.filter(dial_failure(t / 3)) for t in range(1, 180)]
    assert not any(passed)
    summary = dial_failure(60.5)
    assert f.filter(summary)
    assert summary.levelname == "WARNING"
    assert summary.getMessage().startswith(
        "180 more failed dials to 127.0.0.1:4001 in the last 60 s"
    )


def test_addresses_are_summarised_apart_and_other_records_pass() -> None:
    f = DialFailureSummary(window=60.0)
    assert f.filter(dial_failure(0.0, 4001))
    assert f.filter(dial_failure(1.0, 4002))  # another peer's first failure
    assert not f.filter(dial_failure(2.0, 4001))
    other = logging.LogRecord("p2pnode.node", logging.INFO, __file__, 1, "ready", (), None)
    assert f.filter(other)
    assert other.levelname == "INFO"
