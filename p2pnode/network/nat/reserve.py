"""Reserving a slot on a relay: the client half of circuit relay v2's RESERVE.

A reservation lets other peers reach us through the relay for its lifetime, while we stay
connected to it. The relay answers with when it ends and the relay's own addresses, from which
we build the relayed addresses we advertise (``<relay addr>/p2p/<relay>/p2p-circuit``).
py-libp2p's client keeps neither the addresses nor the limits it is told, hence this one.
"""

from __future__ import annotations

import time
from contextlib import suppress
from dataclasses import dataclass

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL
from libp2p.relay.circuit_v2.protocol_buffer import StatusCode
from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg

from p2pnode.network.nat.circuit import circuit_addr

MAX_RELAY_ADDRS = 8


class ReserveError(Exception):
    """The relay refused or did not answer; the message says why."""


@dataclass(frozen=True, slots=True)
class Reservation:
    relay: ID
    expires: float  #: unix time the relay lets the slot lapse
    relay_addrs: tuple[str, ...]  #: the relay's addresses, each with /p2p/<relay>
    max_bytes: int  #: per circuit (0: the relay sets no limit)
    max_seconds: int  #: per circuit (0: the relay sets no limit)

    def circuit_addrs(self) -> list[str]:
        """Our relayed addresses through this relay (without /p2p/<us>)."""
        return [circuit_addr(a) for a in self.relay_addrs]


async def reserve(
    host: IHost, relay: ID, *, timeout: float, fallback_addrs: list[str] = ()
) -> Reservation:
    """Ask ``relay`` (connected) for a reservation. ``fallback_addrs`` (the relay's
    addresses as we know them) are used when its answer names none."""
    stream = None
    with trio.move_on_after(timeout) as scope:
        try:
            stream = await host.new_stream(relay, [HOP_PROTOCOL])
            await write_delimited_msg(stream, HopMessage(type=HopMessage.RESERVE))
            resp = await read_delimited_msg(stream, HopMessage)
        except Exception as exc:
            raise ReserveError(f"{exc!r}") from None
        finally:
            if stream is not None:
                with trio.CancelScope(shield=True), suppress(Exception):
                    await stream.close()
    if scope.cancelled_caught:
        raise ReserveError(f"no answer in {timeout:g} s")
    status = StatusCode(resp.status) if resp.HasField("status") else StatusCode.UNUSED
    if status != StatusCode.OK or not resp.HasField("reservation"):
        raise ReserveError(f"refused: {status.name}")
    addrs: list[str] = []
    suffix = f"/p2p/{relay.to_base58()}"
    for raw in list(resp.reservation.addrs)[:MAX_RELAY_ADDRS]:
        try:
            a = str(multiaddr.Multiaddr(bytes(raw)))
        except Exception:
            continue
        if "/p2p-circuit" in a or "/ip4/0.0.0.0/" in a:
            continue
        addrs.append(a if a.endswith(suffix) else a + suffix)
    if not addrs:
        addrs = [a if a.endswith(suffix) else a + suffix for a in fallback_addrs]
    # Loopback addresses help only peers on the relay's own machine.
    routable = [a for a in addrs if not a.startswith(("/ip4/127.", "/ip6/::1/"))]
    addrs = routable or addrs
    limit = resp.limit if resp.HasField("limit") else None
    expires = float(resp.reservation.expire) or time.time() + 60.0
    return Reservation(
        relay=relay,
        expires=expires,
        relay_addrs=tuple(dict.fromkeys(addrs)),
        max_bytes=int(limit.data) if limit is not None else 0,
        max_seconds=int(limit.duration) if limit is not None else 0,
    )


__all__ = ["Reservation", "ReserveError", "reserve"]
