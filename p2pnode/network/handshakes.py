"""Counting failed security handshakes: the sign of a peer on another private network.

Two nodes with different pre-shared keys (``psk_file``) reach each other's TCP port, but each
reads the other's bytes as noise, so the Noise handshake fails or, more often, never completes
and the dial times out. py-libp2p gives no hook for it. :class:`HandshakeWatch` collects both
signs: the DHT reports each dial of its own that reached a TCP port but not through the
handshake (:meth:`HandshakeWatch.note`, from connects and bootstrap), and as a logging handler
on py-libp2p's swarm logger it counts "failed to upgrade security" records. ``status`` shows
the count, the last one and a hint, instead of leaving the user a timeout to puzzle over. It
holds two numbers and one string: nothing grows.
"""

from __future__ import annotations

import logging
import time
from typing import Any

SWARM_LOGGER = "libp2p.network.swarm"
_FAILED = "failed to upgrade security"

HINT = (
    "peers reach this node but the secure handshake fails: they are probably on a different"
    " private network (every node needs the same psk_file, or none)"
)


class HandshakeWatch(logging.Handler):
    """Attach with :meth:`install`, detach with :meth:`remove` (the daemon does both)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.count = 0
        self.last: str | None = None
        self.last_at: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(_FAILED):
            self.note(message)

    def note(self, what: str) -> None:
        """One more handshake that failed (``what`` says with whom)."""
        self.count += 1
        self.last = what[:300]
        self.last_at = time.time()

    def install(self) -> HandshakeWatch:
        logging.getLogger(SWARM_LOGGER).addHandler(self)
        return self

    def remove(self) -> None:
        logging.getLogger(SWARM_LOGGER).removeHandler(self)

    def summary(self) -> dict[str, Any]:
        """``{"count", "last", "last_at", "hint"}``; the hint only once something failed."""
        return {
            "count": self.count,
            "last": self.last,
            "last_at": self.last_at,
            "hint": HINT if self.count else None,
        }
