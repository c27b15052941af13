"""The composition root: one daemon, one trio nursery tree.

Start-up order (each step ``await nursery.start``-ed, so a failure stops the start):
store -> identity -> libp2p host listening -> DHT (handlers registered, bootstrap in the
background) -> metrics endpoint -> IPC socket. ``task_status.started`` fires once the IPC
socket accepts requests: that is what "ready" means to the CLI and to ``p2pnode swarm``.

Cancellation: cancelling :meth:`Node.run` stops the IPC server first (socket removed), then
the DHT tasks, then the host closes its connections, then the store is closed. py-libp2p's
own services (KadDHT's maintenance loop) are not started: the DHT service drives refreshes
itself, which also avoids the library's shutdown-order hazard.

Errors: a bad config, an unreadable key or a port in use raise before ``started``.
"""

from __future__ import annotations

import logging
import time

import multiaddr
import trio
from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from p2pnode.blobs.ipc import build_blob_methods
from p2pnode.blobs.service import BlobService
from p2pnode.blobs.store import BlobStore
from p2pnode.config import Config
from p2pnode.consensus.ipc import build_consensus_methods
from p2pnode.consensus.service import ConsensusService
from p2pnode.events import EventBus
from p2pnode.identity import load_identity_file, peer_id_of
from p2pnode.ipc.methods import build_methods
from p2pnode.ipc.server import IpcServer
from p2pnode.membership.ipc import build_membership_methods
from p2pnode.membership.service import MembershipService
from p2pnode.metrics import NodeMetrics
from p2pnode.network.dht import Dht
from p2pnode.network.host import build_host
from p2pnode.store import Store
from protocols.blobs.pointers import PointerValidator

log = logging.getLogger(__name__)

PEER_WATCH_INTERVAL = 0.5


class PeerEvents(INotifee):
    """py-libp2p notifee turning connection changes into ``peers`` events, exactly (a poll
    would miss a disconnect followed by a quick redial). Publishing never blocks."""

    def __init__(self, events: EventBus) -> None:
        self.events = events

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self.events.publish("peers", {"event": "connected", "peer_id": _peer_of(conn)})

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self.events.publish("peers", {"event": "disconnected", "peer_id": _peer_of(conn)})

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


class Node:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.key_pair = load_identity_file(cfg.key_path)
        self.peer_id = peer_id_of(self.key_pair).to_base58()
        self.psk = cfg.read_psk()
        self.events = EventBus()
        self.started_at = time.monotonic()
        self.metrics_port: int | None = None

    async def run(self, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        store = Store(self.cfg.db_path)
        blob_store: BlobStore | None = None
        try:
            self.host = build_host(
                self.key_pair, psk=self.psk, dial_timeout=self.cfg.network.connect_timeout
            )
            listen = [multiaddr.Multiaddr(a) for a in self.cfg.listen]
            async with self.host.run(listen_addrs=listen):
                self.metrics = NodeMetrics(
                    connected_peers=lambda: len(self.host.get_connected_peers()),
                    routing_table_size=lambda: self.dht.table_size(),
                    records=lambda: self.dht.record_count(),
                )
                self.dht = Dht(
                    self.host, self.key_pair, store, self.cfg, observe=self.metrics.observe_dht
                )
                self.dht.on_record = self._record_event
                self.blob_store = blob_store = BlobStore(
                    store, self.cfg.data_dir / "blobs", direct_io=self.cfg.blobs.direct_io
                )
                self.blobs = BlobService(self.host, self.dht, self.blob_store, self.cfg)
                self.dht.validators.register("ptr", PointerValidator())
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.dht.run)
                    await nursery.start(self.blobs.run)
                    self.membership = MembershipService.from_config(
                        self.host, self.key_pair, self.cfg, self.events
                    )
                    await nursery.start(self.membership.run)
                    self.consensus: ConsensusService | None = None
                    if self.cfg.consensus.validators:
                        self.consensus = ConsensusService(
                            self.host, self.key_pair, store, self.cfg, self.events
                        )
                        await nursery.start(self.consensus.run)
                    if self.cfg.metrics_port is not None:
                        self.metrics_port = await nursery.start(
                            self.metrics.serve, self.cfg.metrics_port
                        )
                    ipc = IpcServer(
                        self.cfg.socket_path,
                        {
                            **build_methods(self),
                            **build_blob_methods(self),
                            **build_membership_methods(self.membership),
                            **build_consensus_methods(self),
                        },
                        max_frame=self.cfg.ipc.max_frame,
                        max_clients=self.cfg.ipc.max_clients,
                    )
                    ipc.on_request = self.metrics.observe_ipc
                    await nursery.start(ipc.run)
                    self.host.get_network().register_notifee(PeerEvents(self.events))
                    nursery.start_soon(self._remember_peers)
                    log.info(
                        "p2pnode %s ready: %s, IPC %s",
                        self.peer_id,
                        " ".join(str(a) for a in self.host.get_addrs()),
                        self.cfg.socket_path,
                    )
                    task_status.started(self)
        finally:
            if blob_store is not None:
                blob_store.close()  # its held-back rows go in before the database closes
            store.close()

    def _record_event(self, key: str, seq: int, publisher: str) -> None:
        self.events.publish("records", {"key": key, "seq": seq, "publisher": publisher})

    async def _remember_peers(self) -> None:
        """Keep connected peers in the routing table and their addresses on disk.

        Polled: the addresses identify learns arrive a moment after a connection opens, and
        a poll at this interval costs nothing measurable.
        """
        remembered: dict[ID, tuple[str, ...]] = {}
        while True:
            for peer in self.host.get_connected_peers():
                addrs = tuple(sorted(str(a) for a in self.dht.known_addrs(peer)))
                if addrs and remembered.get(peer) != addrs:
                    remembered[peer] = addrs
                    await self.dht.learn_peer(peer)
            await trio.sleep(PEER_WATCH_INTERVAL)
