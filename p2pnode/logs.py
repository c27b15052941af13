"""Logging set-up for the daemon and the CLI: one stderr handler, libp2p's noise filtered."""

from __future__ import annotations

import logging
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


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_DropLibp2pNoise())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    lib = logging.getLogger("libp2p")
    lib.handlers[:] = [handler]
    lib.propagate = False
    lib.setLevel(logging.WARNING)
