"""DHT key names and Kademlia's geometry: the key prefixes we serve and XOR distance.

A key and a peer are both placed on the same 256-bit line by SHA-256 (of the key's text, of
the peer id's bytes), as in libp2p Kademlia; a key's replicas are the peers nearest it.
"""

from __future__ import annotations

import hashlib

from libp2p.peer.id import ID

KV_PREFIX = "/p2pnode/kv/"
PROVIDER_PREFIX = "/p2pnode/prov/"


def provider_key(name: str) -> str:
    """The DHT key under which the providers of content ``name`` are announced."""
    return PROVIDER_PREFIX + name


def key_point(key: str) -> int:
    """Where a record key sits on the Kademlia line."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest(), "big")


def peer_point(peer: ID) -> int:
    """Where a peer sits on the Kademlia line."""
    return int.from_bytes(hashlib.sha256(peer.to_bytes()).digest(), "big")


def distance(key: str, peer: ID) -> int:
    """Kademlia's XOR distance between a record key and a peer: the replicas of a key are the
    ``dht.replication`` peers nearest it."""
    return peer_point(peer) ^ key_point(key)
