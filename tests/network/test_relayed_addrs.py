"""Relayed addresses survive the address book: the host advertises them whole, and the
peerstore keeps those a DHT answer brings (both once went wrong: docs/networking.md)."""

from __future__ import annotations

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from p2pnode.network.dht.peers import add_addrs, known_addrs
from p2pnode.network.host import advertised_addrs, build_host

RELAY = "12D3KooWMfmGKWJpUNyzmhYALUjNsmgDLqtbkLLqjXLDDe4fPHxx"
VIA = f"/ip4/198.51.100.1/tcp/4001/p2p/{RELAY}/p2p-circuit"


def test_the_host_advertises_its_relayed_address_first_and_whole() -> None:
    relayed: list[Multiaddr] = []
    host = build_host(
        create_new_key_pair(), psk=None, dial_timeout=5, relayed_addrs=lambda: relayed
    )
    me = host.get_id().to_base58()
    assert not any("/p2p-circuit" in str(a) for a in host.get_addrs())
    relayed.append(Multiaddr(VIA))
    assert str(host.get_addrs()[0]) == f"{VIA}/p2p/{me}"
    assert str(advertised_addrs(host)[0]) == VIA


def test_the_peerstore_keeps_relayed_addresses() -> None:
    host = build_host(create_new_key_pair(), psk=None, dial_timeout=5)
    peer = ID.from_base58("12D3KooWKCsM3nCGoVSX1LyuDkJ1bFMHtrnM6ZUipPdhyfDajByk")
    direct = f"/ip4/192.168.1.10/tcp/4001/p2p/{peer.to_base58()}"
    add_addrs(host, peer, [VIA, direct, "not an address"])
    assert {str(a) for a in known_addrs(host, peer)} == {VIA, "/ip4/192.168.1.10/tcp/4001"}
