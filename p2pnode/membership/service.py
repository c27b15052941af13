"""The membership service: one ``p2pnode_protocols.heartbeat.Membership`` machine bound to libp2p.

Transport: ``/p2pnode/swim/1.0.0`` on :class:`p2pnode.network.datagram.DatagramTransport`, the
one PBFT uses: one long-lived outbound stream per peer and direction carrying length-prefixed
packets; nothing is answered on the stream it came in on (an ACK is a packet of its own, on our
own stream to the prober), so SWIM's asynchronous messages map one to one onto packets. Each
peer has a bounded outbound queue and one writer task: when the queue is full the packet is
dropped, as a datagram would be, and the protocol's timeouts deal with it. A peer's inbound
stream ending is news for the machine (a killed daemon's stream ends within ~15 ms).

The machine runs on the daemon's :class:`~p2pnode.machine_driver.MachineDriver`: packets,
connection hints and state changes are submitted to its bounded inbox as events; it owns the
timers, carries out ``Send`` through the transport and hands ``MemberChanged`` back here. The
service talks to its machine only through events (it reads ``members`` for queries).

Cancellation: the transport shields writes under ``write_timeout`` (a write cancelled half-way
can corrupt the Noise session); a write that misses it disconnects the peer. Cancelling ``run``
stops the loop and the transport.

Errors: undecodable, oversized, unsigned, forged, stale or too-frequent packets are refused and
counted by reason (``refused``); none reaches the machine's state. A handler never raises into
the swarm (``set_guarded_handler``). A bug in the machine stops this service only (the driver's
error policy): ``error`` says why, and the daemon goes on serving DHT, blobs and IPC.

Resources: one writer task and at most ``QUEUE`` packets per peer; inbound packets per peer are
rate limited (``membership.max_packets_per_second``); packets are bounded before allocation.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from contextlib import suppress
from dataclasses import replace
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

from p2pnode import __version__
from p2pnode.machine_driver import MachineDriver
from p2pnode.membership import sysinfo
from p2pnode.membership.settings import heartbeat_config
from p2pnode.network.datagram import DatagramTransport
from p2pnode.network.ratelimit import TokenBuckets
from p2pnode.network.signing import Ed25519Signer, Ed25519Verifier
from p2pnode_protocols.heartbeat import (
    ChangeKind,
    LocalStateChanged,
    MemberChanged,
    Membership,
    MemberView,
    MessageReceived,
    NodeState,
    PeerDisconnected,
    PeerDiscovered,
    RemoteProtocolError,
    Started,
    TaskOutcome,
    decode_packet,
    encode_packet,
)
from p2pnode_protocols.heartbeat.messages import PacketKind

log = logging.getLogger(__name__)

PROTOCOL = "/p2pnode/swim/1.0.0"
QUEUE = 64
#: Events queued for the machine; more are dropped and counted (``inbox_full``).
INBOX = 1024
DISCOVERY_INTERVAL = 2.0


class MembershipService:
    def __init__(
        self,
        host: IHost,
        key_pair: KeyPair,
        cfg: Any,
        events: Any = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        """Built from the node's config like every service; ``events`` (an event bus) gets
        membership changes on its ``members`` topic; ``rng`` seeds the machine's choices
        (tests pass one to replay a run; the daemon's is unseeded)."""
        m = cfg.membership
        config = heartbeat_config(m)
        self.host = host
        self.cfg = config
        self.write_timeout = write_timeout = cfg.network.request_timeout
        self.connect_timeout = connect_timeout = cfg.network.connect_timeout
        self.rate = max_packets_per_second = m.max_packets_per_second
        self.events = events
        signer = Ed25519Signer(key_pair)
        self.me = signer.node_id
        self.state = NodeState(
            addrs=(),
            version=__version__[:32],
            cpu_cores=sysinfo.cpu_cores(),
            memory_mb=sysinfo.memory_mb(),
            gpu=sysinfo.gpu_name(),
            free_slots=m.slots or sysinfo.cpu_cores(),
        )
        # Incarnations start at the boot time in milliseconds: a restarted daemon's first
        # alive record beats whatever the swarm remembers of its previous life.
        self.machine = Membership(
            signer=signer,
            verifier=Ed25519Verifier(),
            config=config,
            rng=rng or random.Random(),
            incarnation=time.time_ns() // 1_000_000,
            state=self.state,
        )
        self.refused: Counter[str] = Counter()
        self._buckets = TokenBuckets(rate=max_packets_per_second, burst=2 * max_packets_per_second)
        #: the governance limit (trust parameter max_heartbeats_per_minute); None: no limit.
        self._per_minute: TokenBuckets | None = None
        self.bandwidth_mbps = 0.0
        self.transport = DatagramTransport(
            host,
            PROTOCOL,
            self._receive,
            max_packet=max(config.max_packet_bytes, config.max_sync_bytes + 1024),
            queue_size=QUEUE,
            write_timeout=write_timeout,
            connect_timeout=connect_timeout,
            # No backoff: the next packet to an unreachable peer dials again, so a restarted
            # member is reached by the first probe after it is back.
            redial_backoff=0.0,
            on_stream_end=self._stream_ended,
            on_write=self._wrote,
        )
        self.driver = MachineDriver(
            self.machine,
            name="membership",
            send=self.transport.send,
            encode=encode_packet,
            me=self.me,
            notify=self._changed,  # type: ignore[arg-type]
            inbox_size=INBOX,
        )

    # -- public API ----------------------------------------------------------------------------

    def members(self) -> list[MemberView]:
        return self.machine.members(trio.current_time())

    def set_load(self, *, tasks_running: int, free_slots: int) -> None:
        self._set_state(replace(self.state, tasks_running=tasks_running, free_slots=free_slots))

    def set_models(self, models: tuple[str, ...]) -> None:
        self._set_state(replace(self.state, models=models[:16]))

    def record_task(self, peer: bytes, success: bool) -> None:
        self.driver.submit(TaskOutcome(node=peer, success=success))

    @property
    def error(self) -> str | None:
        """Why the service stopped (a bug in its machine), or None while it runs."""
        return self.driver.error

    def counters(self) -> dict[str, int]:
        out = dict(self.machine.counters)
        for k, v in self.refused.items():
            out[k] = out.get(k, 0) + v
        out["inbox_full"] = out.get("inbox_full", 0) + self.driver.counters["dropped_inbox_full"]
        sent = self.transport.counters
        out["oversized"] = out.get("oversized", 0) + sent["refused_oversized"]
        out["send_queue_full"] = sent["dropped_queue_full"]
        out["packets_sent"] = sent["packets_sent"]
        out["bytes_sent"] = sent["bytes_sent"]
        return out

    def _set_state(self, state: NodeState) -> None:
        if state != self.state:
            self.state = state
            self.driver.submit(LocalStateChanged(state=state))

    # -- the service ---------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[MembershipService] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.transport.run)
            addrs = tuple(str(a) for a in self.host.get_addrs())[:8]
            self.state = replace(self.state, addrs=addrs)
            await nursery.start(self.driver.run, Started(announce=True, state=self.state))
            nursery.start_soon(self._discover)
            task_status.started(self)

    def _changed(self, e: MemberChanged) -> None:
        peer = ID(e.node).to_base58()
        if e.alive is not None and e.kind in (ChangeKind.JOIN, ChangeKind.RECOVERED):
            self._learn_addrs(e.node, e.alive.state.addrs)
        log.info("member %s %s (incarnation %d)", peer, e.kind.value, e.incarnation)
        if self.events is not None:
            self.events.publish(
                "members",
                {
                    "event": e.kind.value,
                    "peer_id": peer,
                    "incarnation": e.incarnation,
                    "status": e.status.name.lower(),
                    "accuser": ID(e.accuser).to_base58() if e.accuser else None,
                },
            )

    def _learn_addrs(self, node: bytes, addrs: tuple[str, ...]) -> None:
        """Alive records carry listen addresses: enough to dial a member we only heard of."""
        ps = self.host.get_peerstore()
        peer = ID(node)
        for a in addrs:
            with suppress(Exception):
                ma = multiaddr.Multiaddr(a.split("/p2p/")[0])
                ps.add_addrs(peer, [ma], 3600)

    # -- transport -----------------------------------------------------------------------------

    def _wrote(self, size: int, seconds: float) -> None:
        if size > 8192:  # push-pull pages: a crude, measured bandwidth estimate
            mbps = size * 8 / max(seconds, 1e-6) / 1e6
            self.bandwidth_mbps = min(1e6, 0.8 * self.bandwidth_mbps + 0.2 * mbps)

    def _stream_ended(self, sender: bytes) -> None:
        # The peer's stream ended: it may have died (SIGKILL shows as EOF within ~15 ms).
        self.driver.submit(PeerDisconnected(node=sender))

    def set_heartbeat_limit(self, per_minute: int) -> None:
        """Accept at most ``per_minute`` SWIM packets a minute from any one peer (0: no limit
        beyond ``membership.max_packets_per_second``); the trust service sets it from the
        governance parameter ``max_heartbeats_per_minute``."""
        if per_minute <= 0:
            self._per_minute = None
        elif self._per_minute is None or self._per_minute.rate != per_minute / 60:
            self._per_minute = TokenBuckets(rate=per_minute / 60, burst=max(1.0, per_minute / 6))

    def _receive(self, sender: bytes, data: bytes) -> None:
        now = trio.current_time()
        if not self._buckets.allow(sender, now):
            self.refused["too_frequent"] += 1
            return
        if self._per_minute is not None and not self._per_minute.allow(sender, now):
            self.refused["over_heartbeat_limit"] += 1
            return
        try:
            packet = decode_packet(
                data,
                max_bytes=self.cfg.max_packet_bytes,
                max_sync_bytes=self.cfg.max_sync_bytes,
                max_state_bytes=self.cfg.max_state_bytes,
            )
        except RemoteProtocolError as exc:
            self.refused[exc.reason] += 1
            log.debug("refused swim packet from %s: %s", ID(sender), exc)
            return
        self.driver.submit(MessageReceived(sender=sender, msg=packet))

    # -- discovery -----------------------------------------------------------------------------

    async def _discover(self) -> None:
        """Connected peers are candidate members; lost connections are probed at once."""
        known: set[ID] = set()
        while True:
            now_connected = set(self.host.get_connected_peers())
            for peer in now_connected - known:
                self.driver.submit(PeerDiscovered(node=peer.to_bytes()))
            for peer in known - now_connected:
                self.driver.submit(PeerDisconnected(node=peer.to_bytes()))
            known = now_connected
            if self.bandwidth_mbps and abs(self.bandwidth_mbps - self.state.bandwidth_mbps) > max(
                1.0, 0.25 * self.state.bandwidth_mbps
            ):
                self._set_state(replace(self.state, bandwidth_mbps=round(self.bandwidth_mbps, 1)))
            await trio.sleep(DISCOVERY_INTERVAL / 10)


__all__ = ["PROTOCOL", "MembershipService", "PacketKind"]
