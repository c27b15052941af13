"""Errors of the PBFT machine, split by blame as in h11.

``LocalProtocolError`` means our caller (or our own code) asked for something illegal: it is a bug
on this node. ``RemoteProtocolError`` means a peer sent bytes or a message we must refuse; it is
raised only at the decode/handle boundary, and the service logs it, lowers the peer's score and
drops the message. ``reply_hint`` names what, if anything, is worth sending back.
"""

from __future__ import annotations

__all__ = ["LocalProtocolError", "PbftError", "RemoteProtocolError"]


class PbftError(Exception):
    """Abstract base of every PBFT protocol error."""

    def __init__(self, msg: str, *, reply_hint: str | None = None) -> None:
        super().__init__(msg)
        #: What the caller may send back to the peer (a message type name), or None for "nothing".
        self.reply_hint = reply_hint


class LocalProtocolError(PbftError):
    """We (or our caller) broke the protocol: a bug, never the peer's fault."""


class RemoteProtocolError(PbftError):
    """A peer sent something malformed, unsigned, forged or out of bounds."""
