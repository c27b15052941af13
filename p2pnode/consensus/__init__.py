"""PBFT commit log in the daemon: the replica on libp2p streams, SQLite, IPC (docs/pbft.md).

The service is imported lazily, so ``p2pnode.consensus.cli`` (loaded by every ``p2pnode``
command) does not pull in libp2p.
"""

from typing import Any

__all__ = ["ConsensusError", "ConsensusService"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import service

        return getattr(service, name)
    raise AttributeError(name)
