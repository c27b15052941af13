"""The addresses we know for peers: reads and writes of py-libp2p's peerstore.

Lookups learn addresses from the ``closer`` entries peers send; the RPC handler hands ours out
in the same form. Both go through here so that a bad address or an unknown peer never raises.
"""

from __future__ import annotations

import multiaddr
from libp2p.abc import IHost
from libp2p.peer.id import ID

PEER_ADDR_TTL = 3600.0


def known_addrs(host: IHost, peer: ID) -> list[multiaddr.Multiaddr]:
    """The peerstore's addresses for ``peer``; py-libp2p raises for unknown peers."""
    try:
        return list(host.get_peerstore().addrs(peer))
    except Exception:
        return []


def add_addrs(host: IHost, peer: ID, addrs: list[str]) -> None:
    """Remember ``addrs`` for ``peer`` (for ``PEER_ADDR_TTL``); unparsable ones are skipped and
    a trailing ``/p2p/<peer>`` is dropped, as the peerstore keeps transport addresses.

    Only a *trailing* ``/p2p/<peer>``: a relayed address carries the relay's ``/p2p/`` before
    its ``/p2p-circuit`` (and multiaddr's ``decapsulate`` raises for a part that is absent,
    which once dropped every relayed address a provider record brought)."""
    suffix = f"/p2p/{peer.to_base58()}"
    parsed = []
    for a in addrs:
        text = a[: -len(suffix)] if a.endswith(suffix) else a
        try:
            parsed.append(multiaddr.Multiaddr(text))
        except Exception:
            continue
    if parsed:
        host.get_peerstore().add_addrs(peer, parsed, int(PEER_ADDR_TTL))
