"""Dialing one given multiaddr, not "some address of the peer".

py-libp2p's ``host.connect(info)`` first adds ``info.addrs`` to the peerstore, then returns at
once if the peer is already connected, or dials *every* address the peerstore holds. So an
explicit ``connect`` to a wrong address of a known peer "succeeded", and the wrong address stayed
in the peerstore (and from there went to ``dht find-peer``, the peer store on disk and other
nodes). :func:`dial_exact` dials exactly the address given and leaves the peerstore alone: the
caller stores the address once it has worked.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.security.pnet.protector import new_protected_conn

from p2pnode.network.nat.circuit import CircuitError, dial_circuit, is_circuit

# dial_exact's caller bounds the time (its docstring); dial_circuit wants a bound of its own.
_NO_TIMEOUT = float("inf")


class DialError(Exception):
    """The address did not lead to the peer; the message says why."""


async def dial_exact(host: IHost, peer: ID, addr: multiaddr.Multiaddr) -> None:
    """Reach ``peer`` at ``addr`` (with or without ``/p2p/``); raises :class:`DialError`.

    The caller bounds the time. Not connected: a real connection over ``addr``, kept. Already
    connected: a second connection would make the swarm trim one of the two (possibly the one in
    use), so ``addr`` is only probed: a transport dial and the Noise handshake, which proves the
    key at the other end is ``peer``'s, then closed. The peer logs a failed muxer negotiation
    for that probe.
    """
    network: Any = host.get_network()
    if is_circuit(addr):
        # Through a relay: a connected peer needs no second, relayed, connection (and a
        # relayed probe would prove only what the relay forwards).
        if any(not getattr(c, "is_closed", False) for c in network.get_connections(peer)):
            return
        try:
            await dial_circuit(host, peer, addr, timeout=_NO_TIMEOUT)
        except CircuitError as exc:
            raise DialError(str(exc)) from None
        return
    # A dial of the swarm's own (Kademlia's, say) under way: let it finish rather than open a
    # second connection that the swarm would then trim.
    ongoing = getattr(network, "_ongoing_dials", {}).get(peer)
    if ongoing is not None:
        await ongoing.wait()
    live = [c for c in network.get_connections(peer) if not getattr(c, "is_closed", False)]
    if live:
        await _probe(network, peer, addr)
        return
    try:
        conn = await network.dial_addr(addr, peer)
    except Exception as exc:
        raise DialError(_reason(exc)) from None
    started = getattr(conn, "event_started", None)
    if started is not None:
        await started.wait()
    # What host.connect does after its own dial: identify fills in the peer's protocols.
    schedule = getattr(host, "_schedule_identify", None)
    if callable(schedule):
        with suppress(Exception):
            schedule(peer, reason="connect")


async def prove_key_at(network: Any, peer: ID, addr: multiaddr.Multiaddr) -> None:
    """A fresh transport dial of ``addr`` and the Noise handshake, which proves ``peer``'s key
    is at the other end, then closed: no connection is added. Raises :class:`DialError`.
    The caller bounds the time."""
    await _probe(network, peer, addr)


async def _probe(network: Any, peer: ID, addr: multiaddr.Multiaddr) -> None:
    transport = network.transport_manager.transport_for_dialing(addr)
    if transport is None:
        raise DialError(f"no transport can dial {addr}")
    target = addr
    if not any(p.name == "p2p" for p in addr.protocols()):
        target = addr.encapsulate(multiaddr.Multiaddr(f"/p2p/{peer.to_base58()}"))
    raw = None
    try:
        raw = await transport.dial(target)
        if network.psk is not None:
            raw = new_protected_conn(raw, network.psk)
        secured = await network.upgrader.upgrade_security(raw, True, peer)
    except Exception as exc:
        if raw is not None:
            with trio.CancelScope(shield=True), suppress(Exception):
                await raw.close()
        raise DialError(_reason(exc)) from None
    with trio.CancelScope(shield=True), suppress(Exception):
        await secured.close()


def _reason(exc: BaseException) -> str:
    """The innermost message of the cause chain: py-libp2p wraps the OS or handshake error in
    SwarmExceptions and exception groups that each repeat the address."""
    parts: list[str] = []
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        text = str(seen).split(" (")[0].strip() if isinstance(seen, BaseExceptionGroup) else ""
        text = text or str(seen).strip()
        if text and not any(text in p for p in parts):
            parts = [p for p in parts if p not in text] + [text]
        if isinstance(seen, BaseExceptionGroup) and seen.exceptions:
            seen = seen.exceptions[0]
        else:
            seen = seen.__cause__ or seen.__context__
    return parts[-1] if parts else type(exc).__name__


async def answers_tcp(addr: multiaddr.Multiaddr, timeout: float) -> bool:
    """Whether a TCP connection to ``addr``'s host and port opens within ``timeout``: told
    apart from a handshake that failed, it says the peer is there but speaks another key."""
    try:
        host = addr.value_for_protocol("ip4") or addr.value_for_protocol("ip6")
        port = int(addr.value_for_protocol("tcp"))
    except Exception:
        return False
    with trio.move_on_after(timeout):
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError:
            return False
        await stream.aclose()
        return True
    return False


def private_network_hint(psk_in_use: bool) -> str:
    """What to tell someone whose dial reached the peer but not through the handshake."""
    mine = "this node uses a psk_file" if psk_in_use else "this node has no psk_file"
    return (
        "the address answers but the secure handshake did not complete: the peer is probably"
        f" on a different private network ({mine}; every node needs the same key, or none)"
    )
