"""The DHT: signed records and provider entries over Kademlia routing.

:mod:`.service` composes the parts and runs the periodic work; :mod:`.records` holds what this
node stores, :mod:`.lookup` runs iterative lookups, :mod:`.handler` serves peers' requests,
:mod:`.keys` and :mod:`.peers` hold key names, XOR distance and peerstore helpers.
"""

from p2pnode.network.dht.keys import KV_PREFIX, PROVIDER_PREFIX, distance, provider_key
from p2pnode.network.dht.lookup import MAX_LOOKUP_STEPS
from p2pnode.network.dht.peers import PEER_ADDR_TTL
from p2pnode.network.dht.service import Dht, DhtError, DhtStats, PutResult

__all__ = [
    "KV_PREFIX",
    "MAX_LOOKUP_STEPS",
    "PEER_ADDR_TTL",
    "PROVIDER_PREFIX",
    "Dht",
    "DhtError",
    "DhtStats",
    "PutResult",
    "distance",
    "provider_key",
]
