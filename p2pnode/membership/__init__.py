"""The membership service: SWIM + Lifeguard (``protocols.heartbeat``) over libp2p streams."""

from .service import MembershipService

__all__ = ["MembershipService"]
