"""A blob manifest from a provider (``p2pnode_protocols.blobs.manifest.decode_manifest``) and
the blob key naming it (``p2pnode_protocols.blobs.cid.parse_cid``, which IPC, pointers and the
fetcher apply to keys from clients and peers). Allowed: ``ManifestError``, ``CidError``."""

from __future__ import annotations

from tests.fuzz.harness import Target, instrumented

with instrumented("p2pnode_protocols.blobs"):
    from p2pnode_protocols.blobs.cid import CidError, parse_cid
    from p2pnode_protocols.blobs.manifest import ManifestError, decode_manifest


def decode(data: bytes) -> object:
    # The first byte picks which decoder gets the rest: a manifest, or a key as text.
    if data[:1] == b"k":
        return parse_cid(data[1:].decode("utf-8", "replace"))
    return decode_manifest(data)


def seeds() -> list[bytes]:
    from p2pnode_protocols.blobs.cid import multihash
    from p2pnode_protocols.blobs.manifest import Manifest

    m = Manifest(
        chunks=((multihash(b"a"), 1), (multihash(b"bc"), 2)),
        size=3,
        media_type="application/x-p2pnode-tensors",
        meta={"name": "model", "round": 3},
    )
    return [m.encode(), b"k" + m.key.encode()]


TARGET = Target(
    name="blob_manifest",
    decode=decode,
    allowed=(ManifestError, CidError),
    seeds=seeds,
    cbor_at=0,
    max_len=8192,
    doc="`decode_manifest` and `parse_cid` of `p2pnode_protocols.blobs`",
)
