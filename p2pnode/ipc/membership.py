"""IPC methods of the membership service (merged into the node's method table; docs/ipc.md).

``members``: every member this node holds, itself first, with state, incarnation, seconds
since last heard, suspicion (phi), capabilities, load, models and reliability, plus this node's
Lifeguard awareness and the refusal counters. Membership events (join, suspect, dead,
recovered, state) are the ``members`` topic of ``subscribe``.
"""

from __future__ import annotations

from typing import Any

import trio
from libp2p.peer.id import ID

from p2pnode.ipc.server import Method, Session
from p2pnode.membership.service import MembershipService


def member_rows(service: MembershipService) -> list[dict[str, Any]]:
    now = trio.current_time()
    rows = []
    for v in service.members():
        s = v.state
        rows.append(
            {
                "peer_id": ID(v.node).to_base58(),
                "self": v.is_self,
                "state": v.status.name.lower(),
                "incarnation": v.incarnation,
                # This node does not hear itself: null, as for "since" (not -0.0).
                "last_heard": (
                    None if v.is_self or v.last_heard is None else round(now - v.last_heard, 3)
                ),
                "since": None if v.is_self else round(now - v.since, 3),
                "suspicion": v.phi,
                "reliability": v.reliability,
                "version": s.version,
                "addrs": list(s.addrs),
                "capabilities": {
                    "cpu_cores": s.cpu_cores,
                    "memory_mb": s.memory_mb,
                    "gpu": s.gpu or None,
                    "bandwidth_mbps": s.bandwidth_mbps,
                },
                "load": {"tasks_running": s.tasks_running, "free_slots": s.free_slots},
                "models": list(s.models),
            }
        )
    return rows


def build_membership_methods(*, membership: MembershipService) -> dict[str, Method]:
    async def members(params: dict[str, Any], session: Session, rid: int) -> Any:
        return {
            "members": member_rows(membership),
            "awareness": membership.machine.awareness.score,
            "counters": membership.counters(),
        }

    return {"members": members}
