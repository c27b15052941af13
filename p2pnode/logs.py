"""Logging set-up for the daemon and the CLI: one stderr handler, libp2p's noise filtered.

py-libp2p logs every failed dial at ERROR ("Failed to open TCP stream: ..."), and a daemon
whose peer died redials it for as long as the swarm remembers it: left alone, that is a few
ERROR lines a second, forever. :class:`DialFailureSummary` passes the first failure to each
address as a WARNING, then at most one summary line per address per ``window`` saying how many
more failed, so the log stays bounded however long the peer stays away.
"""

from __future__ import annotations

import logging
import re
import sys

# Benign messages py-libp2p logs at WARNING in normal operation (field guide §2, §7.12, §7.17).
_NOISE = (
    "Failed to read DHT message from stream",
    "Error getting transport addresses",
    "MultiselectClient handshake",
    "Failed to open stream",
)


class _DropLibp2pNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("libp2p") and record.levelno < logging.WARNING:
            return False  # libp2p is chatty at INFO; its warnings still show
        message = record.getMessage()
        return not any(message.startswith(n) for n in _NOISE)


_DIAL_FAILURE = "Failed to open TCP stream"
# trio: "all attempts to connect to 127.0.0.1:4001 failed"; a single attempt's OSError ends
# with the address tuple: "Connect call failed ('127.0.0.1', 4001)". Errno text varies by
# platform, so only the address is kept as the key.
_ADDRESS = re.compile(r"connect to (\S+) failed|\(([^()]*)\)\s*$")
#: Addresses remembered at once (a daemon that dialled many dead peers forgets the oldest).
MAX_ADDRESSES = 1024


class DialFailureSummary(logging.Filter):
    """The first failed dial to an address passes (as a WARNING); later ones are counted and
    reported in one line per address per ``window`` seconds (``record.created`` is the clock)."""

    def __init__(self, window: float = 60.0) -> None:
        super().__init__()
        self.window = window
        #: address -> (when its last line was let through, failures not reported since)
        self._seen: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(_DIAL_FAILURE):
            return True
        match = _ADDRESS.search(message)
        address = (match.group(1) or match.group(2)) if match else message
        seen = self._seen.get(address)
        now = record.created
        if seen is None:
            if len(self._seen) >= MAX_ADDRESSES:
                del self._seen[next(iter(self._seen))]
            self._seen[address] = (now, 0)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = f"{message} (later failures to this address: one line a minute)"
            record.args = ()
            return True
        since, quiet = seen
        if now - since < self.window:
            self._seen[address] = (since, quiet + 1)
            return False
        self._seen[address] = (now, 0)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg = (
            f"{quiet + 1} more failed dials to {address} in the last {now - since:.0f} s;"
            f" still unreachable"
        )
        record.args = ()
        return True


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_DropLibp2pNoise())
    handler.addFilter(DialFailureSummary())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    lib = logging.getLogger("libp2p")
    lib.handlers[:] = [handler]
    lib.propagate = False
    lib.setLevel(logging.WARNING)
