"""The membership service: SWIM + Lifeguard (``p2pnode_protocols.heartbeat``) over libp2p streams.

``MembershipService`` is imported lazily, so ``p2pnode.membership.settings`` (used by the
simulator) does not pull in libp2p.
"""

from typing import Any

__all__ = ["MembershipService"]


def __getattr__(name: str) -> Any:
    if name == "MembershipService":
        from .service import MembershipService

        return MembershipService
    raise AttributeError(name)
