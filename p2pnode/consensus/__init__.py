"""PBFT commit log in the daemon: the replica on libp2p streams, SQLite, IPC (docs/pbft.md)."""

from p2pnode.consensus.service import ConsensusError, ConsensusService

__all__ = ["ConsensusError", "ConsensusService"]
