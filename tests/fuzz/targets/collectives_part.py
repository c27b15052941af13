"""A collectives data part from a group member: its header
(``p2pnode_protocols.collectives.wire.decode_part_header``, with the bounds
``p2pnode.collectives.links`` reads with) and its payload (``p2pnode.collectives.codecs
.decode_part``). The crc is not checked here: a hostile member computes it right. Allowed:
``PartError``."""

from __future__ import annotations

from tests.fuzz.harness import Target, instrumented

with instrumented(
    "p2pnode_protocols.collectives.wire",
    "p2pnode.collectives.codecs",
    "p2pnode.training.compression",
):
    from p2pnode.collectives.codecs import decode_part
    from p2pnode_protocols.collectives.wire import HEADER_SIZE, PartError, decode_part_header

MAX_PART_COUNT = 4 << 20  # p2pnode.collectives.links (not imported: it pulls in libp2p)
MAX_PART_BYTES = 8 << 20


def decode(data: bytes) -> object:
    h = decode_part_header(data[:HEADER_SIZE], max_count=MAX_PART_COUNT, max_nbytes=MAX_PART_BYTES)
    payload = data[HEADER_SIZE:]
    if len(payload) != h.nbytes:
        raise PartError("payload length differs from the header's")
    return decode_part(h.codec, payload, h.count)


def seeds() -> list[bytes]:
    import zlib

    import numpy as np

    from p2pnode.collectives.codecs import encode_part
    from p2pnode_protocols.collectives.schedule import Phase
    from p2pnode_protocols.collectives.wire import Codec, PartHeader, encode_part_header

    values = np.linspace(-1, 1, 64, dtype=np.float32)
    out = []
    for codec in Codec:
        payload = bytes(encode_part(codec, values, np.random.default_rng(0)))
        h = PartHeader(1, 2, 3, Phase(0), codec, 0, 1, 0, 64, len(payload), zlib.crc32(payload))
        out.append(encode_part_header(h) + payload)
    return out


TARGET = Target(
    name="collectives_part",
    decode=decode,
    allowed=(PartError,),
    seeds=seeds,
    doc="`decode_part_header` and `p2pnode.collectives.codecs.decode_part`: group data parts",
)
