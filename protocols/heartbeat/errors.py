"""Errors of the heartbeat (membership) machines, split by blame as in h11.

``LocalProtocolError``: our caller (or our own code) asked for something illegal; a bug on this
node. ``RemoteProtocolError``: a peer sent bytes or a record we must refuse; raised only at the
decode boundary (:func:`p2pnode_protocols.heartbeat.codec.decode_packet`). Its ``reason`` is one of
:data:`REFUSAL_REASONS` so the service can count refusals by kind; ``reply_hint`` names what, if
anything, is worth sending back (always None today: a refused packet gets no reply).
"""

from __future__ import annotations

from .. import machine

__all__ = ["REFUSAL_REASONS", "HeartbeatError", "LocalProtocolError", "RemoteProtocolError"]

#: Why a packet or record was refused. ``forged``: bad signature or a sender that is not the
#: authenticated peer; ``unsigned``: no signature at all; ``stale``: an older incarnation than we
#: know (a replay); ``oversized``: over the packet or state cap; ``too_frequent``: over a rate
#: limit; ``malformed``: not a packet.
REFUSAL_REASONS = ("forged", "unsigned", "stale", "oversized", "too_frequent", "malformed")


class HeartbeatError(machine.ProtocolError):
    """Abstract base of every heartbeat protocol error."""

    def __init__(self, msg: str, *, reason: str = "malformed", reply_hint: str | None = None):
        super().__init__(msg, reply_hint=reply_hint)
        self.reason = reason


class LocalProtocolError(HeartbeatError, machine.LocalProtocolError):
    """We (or our caller) broke the protocol: a bug, never the peer's fault."""


class RemoteProtocolError(HeartbeatError, machine.RemoteProtocolError):
    """A peer sent something malformed, unsigned, forged, stale or out of bounds."""
