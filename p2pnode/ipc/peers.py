"""IPC methods on this node's connections: ``peers``, ``connect``, ``disconnect``.

Dialing goes through the DHT service, so a connected peer also enters the routing table; it
dials exactly the address given and stores it only once it worked (p2pnode/network/dial.py).
"""

from __future__ import annotations

from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID

from p2pnode.ipc.errors import InvalidParams, NetworkError
from p2pnode.ipc.params import param
from p2pnode.ipc.server import Method, Session
from p2pnode.network.dht import Dht, DhtError
from p2pnode.network.nat.service import NatService


def build_peer_methods(
    *, host: IHost, dht: Dht, connect_timeout: float, nat: NatService | None = None
) -> dict[str, Method]:
    """``connect_timeout`` bounds a ``disconnect`` as well: closing waits on the peer. With
    ``nat``, each peer says how it is connected (direct, relayed, punched) and through which
    relay."""

    async def peers(params: dict[str, Any], session: Session, rid: int) -> Any:
        out = []
        for peer in sorted(host.get_connected_peers(), key=lambda p: p.to_base58()):
            addrs = [str(a) for a in dht.known_addrs(peer)]
            row: dict[str, Any] = {"peer_id": peer.to_base58(), "addrs": addrs}
            if nat is not None:
                row.update(nat.connection(peer))
            out.append(row)
        return {"peers": out}

    async def connect(params: dict[str, Any], session: Session, rid: int) -> Any:
        addr = param(params, "addr", str)
        if "/p2p/" not in addr:
            raise InvalidParams(f"{addr!r} needs a /p2p/<peer id> part")
        try:
            peer = await dht.connect(addr)
        except DhtError as exc:
            if "bad multiaddr" in str(exc) or "ourselves" in str(exc):
                raise InvalidParams(str(exc)) from None
            raise NetworkError(str(exc)) from None
        return {"peer_id": peer.to_base58()}

    async def disconnect(params: dict[str, Any], session: Session, rid: int) -> Any:
        peer_text = param(params, "peer_id", str)
        try:
            peer = ID.from_base58(peer_text)
        except Exception:
            raise InvalidParams(f"{peer_text!r} is not a peer id") from None
        was_connected = peer in host.get_connected_peers()
        with trio.move_on_after(connect_timeout):
            await host.disconnect(peer)
        return {"peer_id": peer_text, "was_connected": was_connected}

    return {"peers": peers, "connect": connect, "disconnect": disconnect}
