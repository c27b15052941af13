"""A fetcher's requests on ``/p2pnode/blob/1.0.0`` as a provider reads them
(``p2pnode.blobs.wire``: frames bounded by ``MAX_BATCH_REQUEST``, then ``manifest_request`` or
``batch_request``, and each named hash as ``BlobServer`` checks it). Allowed: ``FrameError``,
``BlobError``."""

from __future__ import annotations

import contextlib

from tests.fuzz.harness import Target, instrumented

with instrumented("p2pnode.blobs.wire", "p2pnode_protocols.framing", "p2pnode_protocols.blobs"):
    from p2pnode.blobs.errors import BlobError
    from p2pnode.blobs.wire import MAX_BATCH_REQUEST, batch_request, manifest_request
    from p2pnode_protocols.blobs.cid import CidError, parse_cid
    from p2pnode_protocols.framing import FrameDecoder, FrameError


def decode(data: bytes) -> list[object]:
    dec = FrameDecoder(MAX_BATCH_REQUEST)
    dec.receive_data(data)
    dec.receive_data(b"")
    out: list[object] = []
    while (frame := dec.next_frame()) is not None:
        if "key" in frame:
            key, first = manifest_request(frame)
            with contextlib.suppress(CidError):
                parse_cid(key)  # the store looks the key up; a non-key is simply not held
            out.append((key, first))
        else:
            hashes = batch_request(frame)
            out.append([h for h in hashes if isinstance(h, bytes)])
    return out


def seeds() -> list[bytes]:
    from p2pnode_protocols.blobs.cid import manifest_cid, multihash
    from p2pnode_protocols.framing import encode_frame

    return [
        encode_frame({"key": manifest_cid(b"m"), "first": 4})
        + encode_frame({"hashes": [multihash(b"a"), multihash(b"b")]}),
        encode_frame({"hashes": [multihash(b"c")] * 3}),
    ]


TARGET = Target(
    name="blob_wire",
    decode=decode,
    allowed=(FrameError, BlobError),
    seeds=seeds,
    doc="a provider's reading of blob requests (`p2pnode.blobs.wire`)",
)
