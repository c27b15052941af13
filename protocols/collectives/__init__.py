"""Collectives (all-reduce groups of peers), sans I/O: the pure pieces the daemon's
collectives service uses.

- :mod:`.schedule`: shards and parts of an array, the ring and butterfly plans (who sends which
  shard to whom, step by step), and the choice of algorithm;
- :mod:`.topology`: the ring order that minimises the slowest link, from measured link costs;
- :mod:`.wire`: the byte layout of a part on a data stream;
- :mod:`.control`: the group's control messages; :mod:`.group`: the group machine;
- :mod:`.errors`: :class:`PartError` (the peer's fault).
"""

from .errors import MessageError, PartError
from .schedule import (
    Algorithm,
    Phase,
    Transfer,
    butterfly_plan,
    choose_algorithm,
    owner_butterfly,
    owner_ring,
    parts,
    ring_plan,
    shards,
)
from .topology import edge_cost, ring_cost, ring_order
from .wire import (
    HEADER,
    HEADER_SIZE,
    MAGIC,
    Codec,
    PartHeader,
    check_payload,
    decode_part_header,
    descriptor_digest,
    encode_part_header,
    max_payload,
)

__all__ = [
    "HEADER",
    "HEADER_SIZE",
    "MAGIC",
    "Algorithm",
    "Codec",
    "MessageError",
    "PartError",
    "PartHeader",
    "Phase",
    "Transfer",
    "butterfly_plan",
    "check_payload",
    "choose_algorithm",
    "decode_part_header",
    "descriptor_digest",
    "edge_cost",
    "encode_part_header",
    "max_payload",
    "owner_butterfly",
    "owner_ring",
    "parts",
    "ring_cost",
    "ring_order",
    "ring_plan",
    "shards",
]
