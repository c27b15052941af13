"""The composition root: one daemon, one trio nursery tree.

Every service is built first, each handed its dependencies in its constructor
(:meth:`Node._build`), then started in dependency order, each ``await nursery.start``-ed so a
failure stops the start: store -> identity -> libp2p host listening -> DHT (handlers
registered, bootstrap in the background) -> NAT traversal (dial-back, relay, hole punching)
-> mDNS (when on) -> blobs -> membership -> consensus and rounds
(when configured) -> collectives -> metrics endpoint -> IPC socket -> web view (when
``http.port``) -> peer watch.
``task_status.started`` fires once the IPC socket accepts requests: that is what "ready" means
to the CLI and to ``p2pnode swarm``.

The IPC method table is put together here from one adapter per service
(:mod:`p2pnode.ipc`), each handed only the services it serves.

Cancellation: cancelling :meth:`Node.run` stops the services in the reverse order (the IPC
server first, socket removed, then the DHT tasks), then the host closes its connections, then
the store is closed. py-libp2p's own services (KadDHT's maintenance loop) are not started: the
DHT service drives refreshes itself, which also avoids the library's shutdown-order hazard.

Errors: a bad config, an unreadable key or a port in use raise before ``started``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import multiaddr
import trio
from libp2p.abc import IHost

from p2pnode import __version__
from p2pnode.blobs.service import BlobService
from p2pnode.blobs.store import BlobStore
from p2pnode.collectives.service import CollectivesService
from p2pnode.config import Config
from p2pnode.consensus.service import ConsensusService
from p2pnode.events import EventBus
from p2pnode.identity import load_identity_file, peer_id_of
from p2pnode.ipc.blobs import build_blob_methods
from p2pnode.ipc.collectives import build_collective_methods
from p2pnode.ipc.consensus import build_consensus_methods
from p2pnode.ipc.dht import build_dht_methods
from p2pnode.ipc.doctor import build_doctor_methods
from p2pnode.ipc.jobs import build_job_methods
from p2pnode.ipc.membership import build_membership_methods
from p2pnode.ipc.nat import build_nat_methods
from p2pnode.ipc.peers import build_peer_methods
from p2pnode.ipc.server import IpcServer, Method
from p2pnode.ipc.status import build_status_methods
from p2pnode.ipc.subscriptions import build_subscription_methods
from p2pnode.ipc.trust import build_trust_methods
from p2pnode.membership.service import MembershipService
from p2pnode.metrics import NodeMetrics
from p2pnode.network.clock import install_clock
from p2pnode.network.dht import Dht
from p2pnode.network.handshakes import HandshakeWatch
from p2pnode.network.host import build_host
from p2pnode.network.mdns import MdnsConnector
from p2pnode.network.nat.service import NatService
from p2pnode.network.peers import PeerWatch
from p2pnode.rounds.service import RoundsService
from p2pnode.service_metrics import MetricsFeed, ServiceCollector
from p2pnode.store import Store
from p2pnode.trust.service import TrustService, make_ledger
from p2pnode.web import WebServer
from p2pnode_protocols.blobs.pointers import PointerValidator

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Services:
    """The services of one running node, built by :meth:`Node._build`."""

    host: IHost
    metrics: NodeMetrics
    dht: Dht
    blob_store: BlobStore
    blobs: BlobService
    membership: MembershipService
    consensus: ConsensusService | None  # None without consensus.validators
    rounds: RoundsService | None  # training rounds ride on consensus
    trust: TrustService | None  # so does the trust ledger
    collectives: CollectivesService
    peers: PeerWatch
    nat: NatService
    mdns: MdnsConnector | None  # None unless discovery.mdns
    metrics_feed: MetricsFeed


class Node:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.key_pair = load_identity_file(cfg.key_path)
        self.peer_id = peer_id_of(self.key_pair).to_base58()
        self.psk = cfg.read_psk()
        self.events = EventBus()
        self.started_at = time.monotonic()
        self.metrics_port: int | None = None
        self.http_port: int | None = None
        self._nat: NatService | None = None  # the host's address factory reads it

    async def run(self, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        store = Store(self.cfg.db_path)
        blob_store: BlobStore | None = None
        # Installed before the host runs: a peer on another private network fails its
        # handshake as soon as it dials us.
        self.handshakes = HandshakeWatch().install()
        try:
            self.host = build_host(
                self.key_pair,
                psk=self.psk,
                dial_timeout=self.cfg.network.connect_timeout,
                announce=self.cfg.announce,
                relayed_addrs=lambda: self._nat.relayed_addrs() if self._nat else [],
                mdns=self.cfg.discovery.mdns,
            )
            listen = [multiaddr.Multiaddr(a) for a in self.cfg.listen]
            async with self.host.run(listen_addrs=listen):
                blob_store = BlobStore(
                    store, self.cfg.data_dir / "blobs", direct_io=self.cfg.blobs.direct_io
                )
                self.services = services = self._build(self.host, store, blob_store)
                async with trio.open_nursery() as nursery:
                    await self._start(services, nursery)
                    log.info(
                        "p2pnode %s ready: %s, IPC %s",
                        self.peer_id,
                        " ".join(str(a) for a in self.host.get_addrs()),
                        self.cfg.socket_path,
                    )
                    task_status.started(self)
        finally:
            self.handshakes.remove()
            if blob_store is not None:
                blob_store.close()  # its held-back rows go in before the database closes
            store.close()

    def _build(self, host: IHost, store: Store, blob_store: BlobStore) -> Services:
        cfg = self.cfg
        events = self.events
        dht: Dht  # the metrics' gauges read it; they are read only once the node runs
        metrics = NodeMetrics(
            connected_peers=lambda: len(host.get_connected_peers()),
            routing_table_size=lambda: dht.table_size(),
            records=lambda: dht.record_count(),
        )
        dht = Dht(
            host,
            self.key_pair,
            store,
            cfg,
            observe=metrics.observe_dht,
            on_record=lambda key, seq, publisher: events.publish(
                "records", {"key": key, "seq": seq, "publisher": publisher}
            ),
            validators={"ptr": PointerValidator()},
            on_handshake_failure=self.handshakes.note,
        )
        membership = MembershipService(host, self.key_pair, cfg, events)
        metrics.watch_service("membership", lambda: membership.error is None)
        consensus = None
        if cfg.consensus.validators:
            consensus = ConsensusService(
                host, self.key_pair, store, cfg, events, members=events.subscribe("members")
            )
            metrics.watch_service("consensus", lambda: consensus.error is None)
        blobs = BlobService(host, dht, blob_store, cfg)
        rounds = None
        trust: TrustService | None = None
        if consensus is not None:

            def publish(item: object) -> None:  # genesis entries come before the service
                if trust is not None:
                    trust.publish(item)

            ledger = make_ledger(cfg, consensus.verifier, listener=publish)
            # The rounds service folds the log into both ledgers, in one pass (docs/trust.md).
            rounds = RoundsService(
                host,
                self.key_pair,
                cfg,
                consensus=consensus,
                blobs=blobs,
                membership=membership,
                events=events,
                trust=ledger,
                committee_at=lambda seq: consensus.schedule.committee_at(seq).validators,
            )
            trust = TrustService(
                self.key_pair,
                cfg,
                consensus=consensus,
                ledger=ledger,
                events=events,
                on_params=lambda p: membership.set_heartbeat_limit(
                    int(p["max_heartbeats_per_minute"])
                ),
            )
            rounds.on_unsolicited = trust.accuse_unsolicited
            metrics.watch_service("rounds", lambda: rounds.error is None)
        collectives = CollectivesService(
            host,
            cfg,
            dht=dht,
            membership=membership,
            events=events,
            observe=metrics.observe_collective,
        )
        metrics.watch_service("collectives", lambda: collectives.error is None)
        self._nat = nat = NatService(host, cfg, connect=dht.connect)
        install_clock(host)
        mdns = MdnsConnector(host, connect=dht.connect) if cfg.discovery.mdns else None
        blobs.observe_fetch = metrics.observe_blob_fetch
        if consensus is not None:
            consensus.observe_commit = metrics.observe_commit
        metrics.registry.register(
            ServiceCollector(
                membership=membership,
                blobs=blobs,
                consensus=consensus,
                rounds=rounds,
                trust=trust,
                version=__version__,
                peer_id=self.peer_id,
                started=time.time(),
            )
        )
        feed = MetricsFeed(
            metrics.registry,
            events,
            summary_of=None if rounds is None else _round_summary(rounds),
        )
        return Services(
            host=host,
            metrics=metrics,
            dht=dht,
            blob_store=blob_store,
            blobs=blobs,
            membership=membership,
            consensus=consensus,
            rounds=rounds,
            trust=trust,
            collectives=collectives,
            peers=PeerWatch(host, dht, publish=lambda event: events.publish("peers", event)),
            nat=nat,
            mdns=mdns,
            metrics_feed=feed,
        )

    async def _start(self, s: Services, nursery: trio.Nursery) -> None:
        await nursery.start(s.metrics_feed.run)  # first: it sees every event from the start
        await nursery.start(s.dht.run)
        await nursery.start(s.nat.run)
        if s.mdns is not None:
            await nursery.start(s.mdns.run)
        await nursery.start(s.blobs.run)
        await nursery.start(s.membership.run)
        if s.consensus is not None:
            await nursery.start(s.consensus.run)
        if s.rounds is not None:
            await nursery.start(s.rounds.run)
        if s.trust is not None:
            await nursery.start(s.trust.run)
        await nursery.start(s.collectives.run)
        if self.cfg.metrics_port is not None:
            self.metrics_port = await nursery.start(s.metrics.serve, self.cfg.metrics_port)
        methods = self._methods(s)
        ipc = IpcServer(
            self.cfg.socket_path,
            methods,
            max_frame=self.cfg.ipc.max_frame,
            max_clients=self.cfg.ipc.max_clients,
            on_request=s.metrics.observe_ipc,
            idle_timeout=self.cfg.ipc.idle_timeout,
            frame_timeout=self.cfg.ipc.frame_timeout,
            max_buffered=self.cfg.ipc.max_buffered,
        )
        await nursery.start(ipc.run)
        if self.cfg.http.port:
            # The web view reads the same adapters as the IPC socket, in process.
            web = WebServer(
                methods=methods, events=self.events, peer_id=self.peer_id, cfg=self.cfg.http
            )
            self.http_port = await nursery.start(web.serve, self.cfg.http.port)
        await nursery.start(s.peers.run)

    def _methods(self, s: Services) -> dict[str, Method]:
        """The IPC method table: one adapter per service, each given only what it serves."""
        return {
            **build_status_methods(
                cfg=self.cfg,
                peer_id=self.peer_id,
                started_at=self.started_at,
                host=s.host,
                dht=s.dht,
                blobs=s.blobs,
                blob_store=s.blob_store,
                handshakes=self.handshakes,
                nat=s.nat,
                services={
                    "dht": s.dht,
                    "blobs": s.blobs,
                    "membership": s.membership,
                    "consensus": s.consensus,
                    "rounds": s.rounds,
                    "collectives": s.collectives,
                },
            ),
            **build_peer_methods(
                host=s.host,
                dht=s.dht,
                connect_timeout=self.cfg.network.connect_timeout,
                nat=s.nat,
            ),
            **build_nat_methods(nat=s.nat),
            **build_doctor_methods(host=s.host, dht=s.dht),
            **build_dht_methods(dht=s.dht),
            **build_subscription_methods(events=self.events),
            **build_blob_methods(
                blobs=s.blobs, blob_store=s.blob_store, dht=s.dht, peer_id=self.peer_id
            ),
            **build_membership_methods(membership=s.membership),
            **build_consensus_methods(consensus=s.consensus),
            **build_job_methods(rounds=s.rounds, blobs=s.blobs),
            **build_collective_methods(collectives=s.collectives),
            **build_trust_methods(trust=s.trust),
        }


def _round_summary(rounds: RoundsService) -> Callable[[str, int], tuple[int, int, int, int] | None]:
    """(updates used, trainers assigned, outliers, update bytes) of a committed round."""

    def summary(job_id: str, rnd: int) -> tuple[int, int, int, int] | None:
        job = rounds.machine.ledger.jobs.get(job_id)
        if job is None or not 1 <= rnd <= len(job.history):
            return None
        done = job.history[rnd - 1]
        assigned = len(job.assigned.get(rnd, ())) or len(done.contributors)
        return len(done.contributors), assigned, len(done.outliers), done.update_bytes

    return summary
