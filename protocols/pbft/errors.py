"""Errors of the PBFT machine, split by blame as in h11.

``LocalProtocolError`` means our caller (or our own code) asked for something illegal: it is a bug
on this node. ``RemoteProtocolError`` means a peer sent bytes or a message we must refuse; it is
raised only at the decode/handle boundary, and the service logs it, lowers the peer's score and
drops the message. ``reply_hint`` names what, if anything, is worth sending back.
"""

from __future__ import annotations

from .. import machine

__all__ = ["LocalProtocolError", "PbftError", "RemoteProtocolError"]


class PbftError(machine.ProtocolError):
    """Abstract base of every PBFT protocol error."""


class LocalProtocolError(PbftError, machine.LocalProtocolError):
    """We (or our caller) broke the protocol: a bug, never the peer's fault."""


class RemoteProtocolError(PbftError, machine.RemoteProtocolError):
    """A peer sent something malformed, unsigned, forged or out of bounds."""
