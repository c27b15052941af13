"""Dialing a peer through a relay, and teaching the swarm to do it.

A circuit address reads ``<relay addr>/p2p/<relay>/p2p-circuit/p2p/<peer>``. To dial it we
ask the relay (``/libp2p/circuit/relay/0.2.0/hop``, CONNECT) to join us to the peer; the relay
opens a stop stream to the peer, and the two streams, spliced by the relay, carry a new libp2p
connection (Noise, yamux) between us and the peer, end to end encrypted: the relay only sees
ciphertext.

py-libp2p 0.8.1's swarm drops every ``/p2p-circuit`` address when it dials a peer, and its
``CircuitV2Transport`` is not a swarm transport (docs/networking.md), so :func:`install`
wraps the swarm's ``dial_peer``: a peer that advertises a relayed address is dialled through
it first (such a peer says it is behind a NAT: its direct addresses are private ones, or
unreachable), and by its other addresses after that. A direct connection, if the NATs allow
one, comes from hole punching (:mod:`.punch`) once the relayed one is up.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost, INetConn
from libp2p.connection_types import ConnectionType
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.network.exceptions import SwarmException
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.pb.circuit_pb2 import PeerId as CircuitPeerId
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL
from libp2p.relay.circuit_v2.protocol_buffer import StatusCode
from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg

log = logging.getLogger(__name__)

CIRCUIT = "/p2p-circuit"
# A peer may advertise several relays; more than this many failing in a row is not worth the
# wait before its direct addresses are tried.
MAX_CIRCUIT_TRIES = 3


class CircuitError(Exception):
    """The relay did not join us to the peer; the message says why."""


def is_circuit(addr: multiaddr.Multiaddr | str) -> bool:
    return CIRCUIT in str(addr)


def split_circuit(addr: multiaddr.Multiaddr | str) -> tuple[multiaddr.Multiaddr, ID]:
    """``(relay address with /p2p/<relay>, relay id)`` of a circuit address (with or without
    the trailing ``/p2p/<peer>``); raises ValueError for anything else."""
    text = str(addr)
    head, sep, _ = text.partition(CIRCUIT)
    if not sep or "/p2p/" not in head:
        raise ValueError(f"{text!r} is not a relayed address")
    relay = ID.from_base58(head.rpartition("/p2p/")[2])
    return multiaddr.Multiaddr(head), relay


def circuit_addr(relay_addr: multiaddr.Multiaddr | str, peer: ID | None = None) -> str:
    """The relayed address of ``peer`` (or of ourselves, without /p2p/) behind a relay
    address that carries ``/p2p/<relay>``."""
    base = f"{relay_addr}{CIRCUIT}"
    return base if peer is None else f"{base}/p2p/{peer.to_base58()}"


def relay_of_connection(conn: Any) -> str | None:
    """The relay's peer id (base58) of a relayed connection, None for a direct one."""
    try:
        if conn.get_connection_type() != ConnectionType.RELAYED:
            return None
        addrs = conn.get_transport_addresses()
    except Exception:
        return None
    for a in addrs or []:
        try:
            return split_circuit(a)[1].to_base58()
        except Exception:
            continue
    return "?"


async def dial_circuit(
    host: IHost, peer: ID, addr: multiaddr.Multiaddr | str, *, timeout: float
) -> INetConn:
    """A new relayed connection to ``peer`` through the relay ``addr`` names.

    We reach the relay first if we are not connected to it. Raises :class:`CircuitError`.
    """
    try:
        relay_addr, relay = split_circuit(addr)
    except Exception as exc:
        raise CircuitError(str(exc)) from None
    if relay == peer or relay == host.get_id():
        raise CircuitError("a peer cannot be its own relay")
    stream = None
    with trio.move_on_after(timeout) as scope:
        try:
            if relay not in host.get_connected_peers():
                relay_direct = relay_addr.decapsulate(multiaddr.Multiaddr(f"/p2p/{relay}"))
                await host.connect(PeerInfo(relay, [relay_direct]))
            stream = await host.new_stream(relay, [HOP_PROTOCOL])
            await write_delimited_msg(
                stream,
                HopMessage(type=HopMessage.CONNECT, peer=CircuitPeerId(id=peer.to_bytes())),
            )
            resp = await read_delimited_msg(stream, HopMessage)
        except Exception as exc:
            if stream is not None:
                with suppress(Exception):
                    await stream.reset()
            raise CircuitError(f"relay {relay.to_base58()[-8:]}: {exc!r}") from None
    if scope.cancelled_caught:
        if stream is not None:
            with trio.CancelScope(shield=True), suppress(Exception):
                await stream.reset()
        raise CircuitError(f"relay {relay.to_base58()[-8:]} did not answer in {timeout:g} s")
    assert stream is not None
    status = StatusCode(resp.status) if resp.HasField("status") else StatusCode.UNUSED
    if status != StatusCode.OK:
        with suppress(Exception):
            await stream.reset()
        raise CircuitError(f"relay {relay.to_base58()[-8:]} refused: {status.name}")
    full = multiaddr.Multiaddr(circuit_addr(relay_addr, peer))
    raw = RawConnection(
        stream=stream, initiator=True, connection_type=ConnectionType.RELAYED, addresses=[full]
    )
    try:
        with trio.fail_after(timeout):
            conn = await host.upgrade_outbound_connection(raw, peer)
    except BaseException as exc:
        with trio.CancelScope(shield=True), suppress(Exception):
            await stream.reset()
        if isinstance(exc, Exception):
            raise CircuitError(f"handshake through the relay failed: {exc!r}") from None
        raise
    # What host.connect does after a dial of its own: identify fills in the peer's protocols
    # (hole punching needs to know the peer speaks DCUtR).
    schedule = getattr(host, "_schedule_identify", None)
    if callable(schedule):
        with suppress(Exception):
            schedule(peer, reason="connect")
    return conn


def install(host: IHost, *, timeout: float) -> None:
    """Wrap the swarm's ``dial_peer`` so peers known only (or first) by a relayed address
    can be dialled: a circuit first, then the swarm's own dial of the direct addresses."""
    network: Any = host.get_network()
    if getattr(network, "_p2pnode_circuits", False):
        return
    direct_dial = network.dial_peer
    ongoing: dict[ID, trio.Event] = {}

    async def dial_peer(peer_id: ID) -> list[INetConn]:
        live = [c for c in network.get_connections(peer_id) if not c.is_closed]
        if live:
            return live
        try:
            addrs = list(host.get_peerstore().addrs(peer_id))
        except Exception:
            addrs = []
        circuits = [a for a in addrs if is_circuit(a)]
        if not circuits:
            return await direct_dial(peer_id)
        # One relayed dial per peer at a time: two would give two circuits.
        if peer_id in ongoing:
            await ongoing[peer_id].wait()
            live = [c for c in network.get_connections(peer_id) if not c.is_closed]
            if live:
                return live
        done = ongoing[peer_id] = trio.Event()
        errors: list[str] = []
        try:
            for addr in circuits[:MAX_CIRCUIT_TRIES]:
                try:
                    conn = await dial_circuit(host, peer_id, addr, timeout=timeout)
                    log.info("connected to %s through a relay: %s", peer_id, addr)
                    return [conn]
                except CircuitError as exc:
                    log.info("no relayed connection to %s via %s: %s", peer_id, addr, exc)
                    errors.append(str(exc))
            if len(circuits) < len(addrs):
                return await direct_dial(peer_id)
        finally:
            del ongoing[peer_id]
            done.set()
        raise SwarmException(f"no relay reached {peer_id}: {'; '.join(errors)}")

    network.dial_peer = dial_peer
    network._p2pnode_circuits = True


__all__ = [
    "CircuitError",
    "circuit_addr",
    "dial_circuit",
    "install",
    "is_circuit",
    "relay_of_connection",
    "split_circuit",
]
