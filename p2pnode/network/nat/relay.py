"""Serving as a relay: circuit relay v2's hop side, with this daemon's limits.

py-libp2p's ``CircuitV2Protocol`` parses the messages, keeps reservations
(``RelayResourceManager``: how many, how long, circuits per reservation) and splices two
streams into a circuit. :class:`RelayServer` keeps that and changes what the pinned version
gets wrong or leaves out (docs/networking.md):

* forwarding writes go through :func:`~p2pnode.network.host.shielded_write` (never
  cancelled half-way, which can corrupt the Noise session of the relay's connection), and a
  circuit is cut when its duration is up even when no byte moves;
* a circuit's bytes (both directions together) are capped, and so is the rate of all
  circuits together (``relay.max_rate``, paced rather than refused);
* reservation and connect requests are rate-limited per peer, circuits capped in total;
* counters (bytes relayed, circuits, refusals) for ``status``;
* the stop side (a relayed connection arriving at us) records the relay's id in the circuit
  address; the library writes our own id there.

The stop handler is always installed: any node can be reached through a relay it reserved a
slot on. The hop handler (serving others) is installed by :meth:`RelayServer.start_serving`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost, INetStream
from libp2p.connection_types import ConnectionType
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL
from libp2p.relay.circuit_v2.protocol import (
    STOP_PROTOCOL_ID,
    CircuitV2Protocol,
    _is_relayed_stream,
)
from libp2p.relay.circuit_v2.protocol_buffer import StatusCode
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.relay.circuit_v2.utils import read_delimited_msg

from p2pnode.network.host import WriteOutcome, guarded, shielded_write
from p2pnode.network.ratelimit import Pacer, TokenBuckets

log = logging.getLogger(__name__)

READ_SIZE = 65535


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """What a relay allows (the ``relay.*`` settings, docs/configuration.md)."""

    max_reservations: int
    reservation_ttl: float
    max_circuits: int
    max_circuits_per_peer: int
    max_circuit_bytes: int
    max_circuit_duration: float
    max_rate: float  #: bytes/s over all circuits; 0: no limit
    max_requests_per_minute: float
    write_timeout: float


class RelayServer(CircuitV2Protocol):
    """Hop and stop handlers of circuit relay v2 with the limits of :class:`RelaySettings`.

    Not run as a py-libp2p service: :meth:`install` registers the handlers (guarded, so
    nothing a peer sends can reach the swarm's nursery) and the node's nursery owns the
    circuits' tasks through the handlers.
    """

    def __init__(
        self,
        host: IHost,
        settings: RelaySettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        limits = RelayLimits(
            duration=math.ceil(settings.max_circuit_duration),
            data=settings.max_circuit_bytes,
            max_circuit_conns=settings.max_circuits_per_peer,
            max_reservations=settings.max_reservations,
            reservation_ttl=math.ceil(settings.reservation_ttl),
        )
        super().__init__(
            host,
            limits=limits,
            allow_hop=False,
            write_timeout=math.ceil(settings.write_timeout),
        )
        self.settings = settings
        self._clock = clock
        rate = settings.max_requests_per_minute / 60.0
        self._requests = TokenBuckets(
            rate=rate, burst=max(2.0, settings.max_requests_per_minute / 4)
        )
        self._pacer = (
            Pacer(rate=settings.max_rate, burst=max(settings.max_rate / 4, READ_SIZE))
            if settings.max_rate > 0
            else None
        )
        self.serving = False
        self.reservations_refused = 0
        self.circuit_requests = 0
        self.circuits_refused = 0
        self.circuits_active = 0
        self.circuits_cut = 0  # ended by a limit (bytes or duration)
        self.bytes_relayed = 0

    # -- handlers ------------------------------------------------------------------------------

    def install(self) -> None:
        """Accept relayed connections (the stop side)."""
        self.host.set_stream_handler(
            STOP_PROTOCOL_ID, guarded("relay-stop", self._handle_stop_stream)
        )

    def start_serving(self) -> None:
        """Serve reservations and circuits for other peers (the hop side)."""
        if not self.serving:
            self.serving = True
            self.allow_hop = True
            self.host.set_stream_handler(
                HOP_PROTOCOL, guarded("relay-hop", self._handle_hop_stream)
            )
            log.info("serving as a relay (at most %d reservations)", self.settings.max_reservations)

    def stop_serving(self) -> None:
        if self.serving:
            self.serving = False
            self.allow_hop = False
            with suppress(Exception):
                self.host.remove_stream_handler(HOP_PROTOCOL)

    def stats(self) -> dict[str, Any]:
        reservations = self.resource_manager._reservations
        now = time.time()
        return {
            "serving": self.serving,
            "reservations": sum(1 for r in reservations.values() if r.expires_at > now),
            "reservations_refused": self.reservations_refused,
            "circuit_requests": self.circuit_requests,
            "circuits_active": self.circuits_active,
            "circuits_refused": self.circuits_refused,
            "circuits_cut": self.circuits_cut,
            "bytes_relayed": self.bytes_relayed,
        }

    # -- hop side: limits on top of the library's -----------------------------------------------

    async def _handle_hop_stream(self, stream: INetStream) -> None:
        """One request per hop stream, as go- and rust-libp2p relays do: a RESERVE answered, or
        a CONNECT whose stream then carries the circuit. (The library's handler reads on after
        the answer and logs an ERROR for every client that closes its stream.)"""
        if _is_relayed_stream(stream):
            # Spec: no reservations or circuits over a relayed connection.
            await self._send_status(stream, StatusCode.PERMISSION_DENIED, "relayed connection")
            await self._close_stream(stream)
            return
        try:
            with trio.fail_after(self.read_timeout):
                msg = await read_delimited_msg(stream, HopMessage)
        except Exception as exc:
            log.debug("relay: bad hop request from %s: %r", stream.muxed_conn.peer_id, exc)
            with suppress(Exception):
                await stream.reset()
            return
        if msg.type == HopMessage.RESERVE:
            await self._handle_reserve(stream, msg)
            await self._close_stream(stream)
        elif msg.type == HopMessage.CONNECT:
            await self._handle_connect(stream, msg)
        else:
            await self._send_status(stream, StatusCode.MALFORMED_MESSAGE, "unexpected message")
            await self._close_stream(stream)

    def _allow(self, stream: INetStream) -> bool:
        return self.serving and self._requests.allow(stream.muxed_conn.peer_id, self._clock())

    async def _handle_reserve(self, stream: INetStream, msg: HopMessage) -> None:
        peer = stream.muxed_conn.peer_id
        rm = self.resource_manager
        if not self._allow(stream) or (
            not rm.has_reservation(peer) and not rm.can_accept_reservation(peer)
        ):
            self.reservations_refused += 1
            await self._send_status(stream, StatusCode.RESOURCE_LIMIT_EXCEEDED, "refused")
            return
        await super()._handle_reserve(stream, msg)

    async def _handle_connect(self, stream: INetStream, msg: HopMessage) -> None:
        self.circuit_requests += 1
        if not self._allow(stream) or self.circuits_active >= self.settings.max_circuits:
            self.circuits_refused += 1
            await self._send_status(stream, StatusCode.RESOURCE_LIMIT_EXCEEDED, "refused")
            with suppress(Exception):
                await stream.reset()
            return
        self.circuits_active += 1
        src = stream.muxed_conn.peer_id
        log.info("relay: circuit %s -> %s requested", src, _peer_id_text(msg))
        try:
            await super()._handle_connect(stream, msg)
        finally:
            self.circuits_active -= 1
            log.info("relay: circuit %s -> %s ended", src, _peer_id_text(msg))

    async def _relay_data(
        self,
        src_stream: INetStream,
        dst_stream: INetStream,
        peer_id: ID,
        deadline: float | None = None,
        circuit_data_limit: list[int] | None = None,
    ) -> None:
        """Copy one direction of a circuit until EOF, an error or a limit; then end both."""
        dst_peer = dst_stream.muxed_conn.peer_id
        try:
            while True:
                left = math.inf if deadline is None else deadline - time.monotonic()
                data = b""
                with trio.move_on_after(left):
                    data = await src_stream.read(READ_SIZE)
                if deadline is not None and time.monotonic() >= deadline:
                    self.circuits_cut += 1
                    log.info("relay: circuit for %s reached its duration limit", peer_id)
                    return
                if not data:
                    return
                if circuit_data_limit is not None:
                    if len(data) > circuit_data_limit[0]:
                        self.circuits_cut += 1
                        log.info("relay: circuit for %s reached its byte limit", peer_id)
                        return
                    circuit_data_limit[0] -= len(data)
                if self._pacer is not None:
                    await trio.sleep(self._pacer.reserve(len(data), time.monotonic()))
                outcome = await shielded_write(
                    self.host, dst_stream, dst_peer, [data], timeout=self.write_timeout
                )
                if outcome is not WriteOutcome.OK:
                    return
                self.bytes_relayed += len(data)
        except Exception as exc:
            log.debug("relay: circuit for %s ended: %r", peer_id, exc)
        finally:
            # Either direction ending ends the circuit: the relayed connection inside is
            # one libp2p connection, whose own streams close inside it, not here.
            with trio.CancelScope(shield=True), trio.move_on_after(self.close_timeout):
                for s in (src_stream, dst_stream):
                    with suppress(Exception):
                        await s.reset()

    # -- stop side ------------------------------------------------------------------------------

    async def handle_incoming_connection(self, stream: INetStream, remote_peer_id: bytes) -> None:
        """Upgrade the stop stream into a connection with the peer the relay joins us to."""
        peer = ID(remote_peer_id)
        relay = stream.muxed_conn.peer_id
        addr = multiaddr.Multiaddr(f"/p2p/{relay.to_base58()}/p2p-circuit/p2p/{peer.to_base58()}")
        raw = RawConnection(
            stream=stream, initiator=False, connection_type=ConnectionType.RELAYED, addresses=[addr]
        )
        try:
            muxed = await self.host.upgrade_inbound_connection(raw, addr)
        except Exception as exc:
            with suppress(Exception):
                await stream.reset()
            raise ConnectionError(f"relayed connection from {peer} failed: {exc!r}") from None
        network: Any = self.host.get_network()
        for conn in network.get_connections(peer):
            if getattr(conn, "muxed_conn", None) is muxed:
                with suppress(Exception):
                    conn.set_transport_info([addr], ConnectionType.RELAYED)


def _peer_id_text(msg: HopMessage) -> str:
    try:
        return ID(msg.peer.id).to_base58()
    except Exception:
        return "?"


__all__ = ["RelayServer", "RelaySettings"]
