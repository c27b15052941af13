"""IPC methods of NAT traversal (docs/ipc.md, docs/networking.md).

``nat.status``: reachability (public / relayed / private / unknown) and its evidence, relay
reservations, the relay service's counters, hole punching's counters (``status`` carries the
same under ``nat``). ``nat.punch``: try a hole punch to a peer connected through a relay
now, and say how it is connected afterwards.
"""

from __future__ import annotations

from typing import Any

import trio
from libp2p.peer.id import ID

from p2pnode.ipc.errors import InvalidParams
from p2pnode.ipc.params import param
from p2pnode.ipc.server import Method, Session
from p2pnode.network.nat.service import NatService

# A punch is a few dial rounds of a few seconds each (the library's own bound is ~30 s).
PUNCH_TIMEOUT = 60.0


def build_nat_methods(*, nat: NatService) -> dict[str, Method]:
    async def status(params: dict[str, Any], session: Session, rid: int) -> Any:
        return nat.status()

    async def punch(params: dict[str, Any], session: Session, rid: int) -> Any:
        text = param(params, "peer_id", str)
        try:
            peer = ID.from_base58(text)
        except Exception:
            raise InvalidParams(f"{text!r} is not a peer id") from None
        if peer not in nat.host.get_connected_peers():
            raise InvalidParams(f"not connected to {text}")
        ok = False
        with trio.move_on_after(PUNCH_TIMEOUT):
            ok = await nat.punch(peer)
        return {"peer_id": text, "direct": ok, **nat.connection(peer)}

    return {"nat.status": status, "nat.punch": punch}
