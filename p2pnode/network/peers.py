"""The peer watch: connection changes as events, and connected peers remembered by the DHT.

Two jobs, both about the peers the host is connected to:

- a py-libp2p notifee publishes ``{"event": "connected" | "disconnected", "peer_id"}`` for
  every connection change, exactly (a poll would miss a disconnect followed by a quick
  redial); publishing must never block, as the notifee runs inside the swarm's own tasks;
- a loop puts connected peers into the routing table and their addresses on disk. It polls:
  the addresses identify learns arrive a moment after a connection opens, and a poll at
  ``interval`` costs nothing measurable.

Cancellation: :meth:`PeerWatch.run` runs until its nursery is cancelled. py-libp2p has no way
to remove a notifee, so a cancelled watch stops remembering peers but keeps publishing events
for as long as the host lives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from p2pnode.network.dht import Dht

PEER_WATCH_INTERVAL = 0.5


class PeerWatch:
    def __init__(
        self,
        host: IHost,
        dht: Dht,
        *,
        publish: Callable[[dict[str, Any]], None],
        interval: float = PEER_WATCH_INTERVAL,
    ) -> None:
        self.host = host
        self.dht = dht
        self.publish = publish
        self.interval = interval

    async def run(
        self, *, task_status: trio.TaskStatus[PeerWatch] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Register the notifee, then keep the DHT told of connected peers."""
        self.host.get_network().register_notifee(_ConnectionEvents(self.publish))
        task_status.started(self)
        remembered: dict[ID, tuple[str, ...]] = {}
        while True:
            for peer in self.host.get_connected_peers():
                addrs = tuple(sorted(str(a) for a in self.dht.known_addrs(peer)))
                if addrs and remembered.get(peer) != addrs:
                    remembered[peer] = addrs
                    await self.dht.learn_peer(peer)
            await trio.sleep(self.interval)


class _ConnectionEvents(INotifee):
    """py-libp2p notifee turning connection changes into events."""

    def __init__(self, publish: Callable[[dict[str, Any]], None]) -> None:
        self.publish = publish

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self.publish({"event": "connected", "peer_id": _peer_of(conn)})

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self.publish({"event": "disconnected", "peer_id": _peer_of(conn)})

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        pass


def _peer_of(conn: INetConn) -> str:
    return str(conn.muxed_conn.peer_id.to_base58())
