"""Rate-limited warnings: a fault that repeats (a full disk, a peer sending junk) is logged a few
times per interval, then counted, so the log cannot flood the very disk that is full.

Each call names a *topic*; the first ``burst`` messages of a topic in an ``interval`` are logged,
the rest are counted and reported in one line with the next message logged after the interval.
"""

from __future__ import annotations

import logging
import time
from typing import Any


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, *, burst: int = 3, interval: float = 60.0) -> None:
        self.logger = logger
        self.burst = burst
        self.interval = interval
        self._windows: dict[str, tuple[float, int, int]] = {}  # topic: start, logged, dropped

    def warning(self, topic: str, msg: str, *args: Any) -> bool:
        """Log ``msg % args`` at WARNING unless ``topic`` is over its rate; whether it was."""
        now = time.monotonic()
        start, logged, dropped = self._windows.get(topic, (now, 0, 0))
        if now - start >= self.interval:
            if dropped:
                self.logger.warning(
                    "%d more warnings like the next were not logged in %.0f s", dropped, now - start
                )
            start, logged, dropped = now, 0, 0
        if logged >= self.burst:
            self._windows[topic] = (start, logged, dropped + 1)
            return False
        self._windows[topic] = (start, logged + 1, dropped)
        self.logger.warning(msg, *args)
        return True
