"""The errors of the collectives wire: a peer's bad part or bad control message.

Both are :class:`~p2pnode_protocols.machine.RemoteProtocolError`, so a service drops the
offending stream or message and blames the peer without knowing the protocol.
"""

from __future__ import annotations

from p2pnode_protocols.machine import RemoteProtocolError

__all__ = ["MessageError", "PartError"]


class PartError(RemoteProtocolError):
    """A part header or payload on a data stream is malformed, out of bounds or corrupt."""


class MessageError(RemoteProtocolError):
    """A group control message is malformed, out of bounds or not canonical."""
